"""The watcher's settings (KAIRYU_* variables; see kairyu_core.settings for the shared groups)."""

from __future__ import annotations

from pydantic import Field

from kairyu_core.settings import ServiceSettings


class WatcherSettings(ServiceSettings):
    """Settings of the watcher service."""

    service_name: str = "kairyu-watcher"
    resync_interval_s: float = Field(default=300.0, gt=0)
    """Seconds between re-publishing every Workspace, so that a lost event cannot strand one.
    Longer than JetStream's 2-minute duplicate window, so an unchanged one is delivered again."""
    namespace: str | None = None
    """Watch Workspaces in this namespace only; all namespaces when unset."""
