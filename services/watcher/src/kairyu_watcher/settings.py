"""The watcher's settings (KAIRYU_* variables; see kairyu_core.settings for the shared groups)."""

from __future__ import annotations

import socket

from pydantic import BaseModel, Field, model_validator

from kairyu_core.kube.leadership import Lease
from kairyu_core.settings import ServiceSettings


class LeaderElectionSettings(BaseModel):
    """`KAIRYU_LEADER_ELECTION__*`: standby replicas wait on a Lease (the chart turns it on)."""

    enabled: bool = False
    """Off for one local process (`make dev`), where a Lease would only delay a restart."""
    namespace: str = "default"
    """Where the Lease lives: the chart passes the pod's own namespace."""
    lease_name: str = "kairyu-watcher"
    identity: str = Field(default_factory=socket.gethostname)
    """This candidate's name in the Lease: the pod name, as the hostname is in a pod."""
    duration_s: float = Field(default=15.0, gt=0)
    renew_deadline_s: float = Field(default=10.0, gt=0)
    retry_s: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _timing(self) -> LeaderElectionSettings:
        self.lease()  # Lease checks the timing: a bad one fails here, at start-up, by name
        return self

    def lease(self) -> Lease:
        return Lease(
            name=self.lease_name,
            namespace=self.namespace,
            identity=self.identity,
            duration_s=self.duration_s,
            renew_deadline_s=self.renew_deadline_s,
            retry_s=self.retry_s,
        )


class WatcherSettings(ServiceSettings):
    """Settings of the watcher service."""

    service_name: str = "kairyu-watcher"
    resync_interval_s: float = Field(default=300.0, gt=0)
    """Seconds between attempts to store again the states whose publish failed (NATS away)."""
    namespace: str | None = None
    """Watch Workspaces in this namespace only; all namespaces when unset."""
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings)
