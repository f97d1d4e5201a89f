"""The watcher's settings (KAIRYU_* variables; see kairyu_core.settings for the shared groups)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from kairyu_core.settings import ServiceSettings


class SlowPhaseSettings(BaseModel):
    """Seconds after which a phase of a rollout is slow (KAIRYU_SLOW_PHASES__PROVISION_S, ...).

    The defaults sit well above what each phase takes when nothing is wrong: planning is
    milliseconds, a cloud GPU node is minutes, a model's first load minutes more.
    """

    plan_s: float = Field(default=120.0, gt=0)
    provision_s: float = Field(default=900.0, gt=0)
    deploy_s: float = Field(default=900.0, gt=0)
    tune_s: float = Field(default=3600.0, gt=0)
    check_every_s: float = Field(default=30.0, gt=0)
    """How often the rollouts in progress are looked at."""

    def limit(self, phase: str) -> float:
        """The limit of a phase named as kairyu_contracts.rollout_story names it."""
        limits = {
            "plan": self.plan_s,
            "provision": self.provision_s,
            "deploy": self.deploy_s,
            "tune": self.tune_s,
        }
        return limits[phase]


class WatcherSettings(ServiceSettings):
    """Settings of the watcher service."""

    service_name: str = "kairyu-watcher"
    resync_interval_s: float = Field(default=300.0, gt=0)
    """Seconds between attempts to store again the states whose publish failed (NATS away)."""
    namespace: str | None = None
    """Watch Workspaces in this namespace only; all namespaces when unset."""
    slow_phases: SlowPhaseSettings = SlowPhaseSettings()
    """When a rollout's phase counts as slow, and the watcher records why (an Event)."""
