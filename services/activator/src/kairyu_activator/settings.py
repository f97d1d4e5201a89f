"""The activator's settings (KAIRYU_* variables; kairyu_core.settings has the shared groups)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kairyu_core.settings import ServiceSettings


class ActivatorHttpSettings(BaseModel):
    """Its two listeners and what they answer (KAIRYU_ACTIVATOR__*)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "0.0.0.0"  # noqa: S104 - KEDA and the sets' Services reach it from other pods
    load_port: int = Field(default=8080, ge=0, le=65535)
    """Where KEDA's metrics-api scaler reads `/v1/load/<namespace>/<set>` (0: any free port)."""
    port: int = Field(default=8081, ge=0, le=65535)
    """Where a set's Service sends its requests while the set has no ready pod (0: any)."""
    address: str = ""
    """This pod's IP (the chart sets it from the downward API): the address the sets' Services
    point at while they have no ready pod. Empty: their Services are left alone."""
    retry_after_s: int = Field(default=30, ge=1, le=3600)
    """The Retry-After of a 503 while a set is cold (about a GPU node's and pod's start)."""
    demand_window_s: float = Field(default=600.0, gt=0)
    """How long a request to a set at zero keeps asking for a replica if none becomes ready."""
    runtime_port: int = Field(default=5000, ge=1, le=65535)
    """The inference pods' port, where each serves `/metrics` (the deployer's HTTP port)."""
    scrape_timeout_s: float = Field(default=2.0, gt=0)
    """How long one pod's `/metrics` may take; a pod that does not answer adds nothing."""
    scrape_ttl_s: float = Field(default=1.0, ge=0)
    """A pod's figures are reused this long (KEDA may ask several times in one poll)."""


class ActivatorSettings(ServiceSettings):
    """Settings of the activator service."""

    service_name: str = "kairyu-activator"
    activator: ActivatorHttpSettings = ActivatorHttpSettings()
