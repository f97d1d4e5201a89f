"""The planner's settings (KAIRYU_* variables; see kairyu_core.settings for the shared groups)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from kairyu_core.catalog import Cloud
from kairyu_core.settings import ServiceSettings


class PlanningSettings(BaseModel):
    """What the planner may choose from and how it sizes a model (KAIRYU_PLANNING__*)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cloud: Cloud = Cloud.AZURE
    """The cloud whose SKUs are valid instance types and candidates for automatic choice."""
    allowed_skus: frozenset[str] | None = None
    """SKUs the planner may pick when a Workspace names none (all priced SKUs of the cloud when
    unset). A JSON list in the environment."""
    max_nodes: int = Field(default=4, ge=1)
    """Most nodes one plan may use; a model that needs more is refused with the shortfall."""
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    overhead_gib: float = Field(default=2.3, ge=0)
    min_model_len: int = Field(default=2048, ge=1)
    concurrency: int = Field(default=1, ge=1)


class WebhookSettings(BaseModel):
    """The admission webhook's TLS listener (KAIRYU_WEBHOOK__*); off when no certificate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "0.0.0.0"  # noqa: S104 - the webhook must be reachable by the apiserver
    port: int = Field(default=9443, ge=0, le=65535)
    cert_file: Path | None = None
    key_file: Path | None = None


class PlannerSettings(ServiceSettings):
    """Settings of the planner service."""

    service_name: str = "kairyu-planner"
    planning: PlanningSettings = PlanningSettings()
    webhook: WebhookSettings = WebhookSettings()
