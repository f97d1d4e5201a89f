"""Service settings from the environment (KAIRYU_*), built once in each service's main().

Nested groups use `__`: KAIRYU_NATS__URL, KAIRYU_KUBE__KUBECONFIG, KAIRYU_LOG__FORMAT. Tracing is
configured by the standard OTEL_* variables instead (see `tracing`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class NatsSettings(BaseModel):
    """Where the event bus is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = "nats://127.0.0.1:4222"
    stream: str = "KAIRYU"
    """JetStream stream holding all events."""
    subject_prefix: str = "kairyu"
    """First subject token; lets two installations share one NATS."""


class KubeSettings(BaseModel):
    """How to reach the apiserver."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kubeconfig: Path | None = None
    """A kubeconfig file; when unset, the in-cluster service account (or ~/.kube/config)."""


class LogSettings(BaseModel):
    """Log output."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"
    """json in the cluster (one object per line, with trace ids); text for a terminal."""


class ServiceSettings(BaseSettings):
    """Settings every service has; services subclass it and add their own group."""

    model_config = SettingsConfigDict(
        env_prefix="KAIRYU_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    service_name: str = Field(default="kairyu", min_length=1)
    nats: NatsSettings = NatsSettings()
    kube: KubeSettings = KubeSettings()
    log: LogSettings = LogSettings()
    health_port: int = Field(default=0, ge=0, le=65535)
    """/healthz and /readyz for the kubelet's probes; 0 (the default outside a pod): off."""
    shutdown_grace_s: float = Field(default=20.0, ge=0)
    """Seconds in-flight messages get to finish on SIGTERM before they are handed back to NATS."""
