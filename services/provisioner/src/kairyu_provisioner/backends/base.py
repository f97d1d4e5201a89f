"""The interface every node source implements; the provisioner's handler knows only this."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from kairyu_provisioner.failures import CloudFailure
from kairyu_provisioner.target import Target


@dataclass
class Progress:
    """What one `ensure` found: resources still coming up, or the cloud's refusal."""

    waiting: list[str] = field(default_factory=list)
    """One line per NodeClaim / agent pool not yet done, e.g. "agent pool ws1a2b: Creating"."""
    failure: CloudFailure | None = None


@dataclass(frozen=True)
class Owned:
    """A cloud resource made for a Workspace, as found when looking for orphans."""

    kind: str
    name: str
    namespace: str
    workspace: str
    uid: str


class Backend(Protocol):
    name: str
    creates_nodes: bool
    """False for byo: nothing to create, nothing to free, no finalizer needed."""

    async def prepare(self) -> None:
        """One-time set-up at start-up (e.g. the Karpenter NodePool the claims name)."""
        ...

    def node_selector(self, target: Target) -> str | None:
        """Label selector (server side) for the Workspace's candidate nodes."""
        ...

    async def ensure(self, target: Target) -> Progress:
        """Create what the plan needs and is missing, remove what it no longer needs."""
        ...

    async def discard(self, target: Target) -> None:
        """Remove what was made for the target's SKU after the cloud refused it."""
        ...

    async def release(self, namespace: str, name: str, uid: str) -> list[str]:
        """Start removing everything made for the Workspace; return what still exists."""
        ...

    async def owned(self) -> list[Owned]:
        """Everything this backend made, for any Workspace (orphan collection)."""
        ...

    async def remove(self, owned: Owned) -> None: ...
