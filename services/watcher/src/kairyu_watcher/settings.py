"""The watcher's settings (KAIRYU_* variables; see kairyu_core.settings for the shared groups)."""

from __future__ import annotations

from pydantic import Field

from kairyu_core.settings import ServiceSettings


class WatcherSettings(ServiceSettings):
    """Settings of the watcher service."""

    service_name: str = "kairyu-watcher"
    resync_interval_s: float = Field(default=300.0, gt=0)
    """Seconds between attempts to store again the states whose publish failed (NATS away)."""
    namespace: str | None = None
    """Watch Workspaces in this namespace only; all namespaces when unset."""
