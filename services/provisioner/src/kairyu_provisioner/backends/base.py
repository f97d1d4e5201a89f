"""The interface every node source implements; the provisioner's reconcile knows only this.

Backends read nothing of the apiserver on the hot path: what they made that has a Kubernetes
object (Karpenter's NodeClaims) reaches them from the provisioner's view, as `claims`. Only
`remaining`, asked right before the finalizer goes, reads the source of truth. Cloud resources
without a Kubernetes object (AKS agent pools) are read from the cloud's API, which costs the
apiserver nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kairyu_provisioner.failures import CloudFailure
from kairyu_provisioner.node_target import NodeTarget

Claims = Sequence[dict[str, Any]]
"""The view's NodeClaims labelled with one Workspace (or, for orphans, with a gone one)."""


@dataclass
class Progress:
    """What one `ensure` found: resources still coming up, or the cloud's refusal."""

    waiting: list[str] = field(default_factory=list)
    """One line per NodeClaim / agent pool not yet done, e.g. "agent pool ws1a2b: Creating"."""
    failure: CloudFailure | None = None
    poll: bool = False
    """True while something is under way that no change in the view will announce (an ARM
    operation on an agent pool without nodes yet): the provisioner looks again on a timer."""


@dataclass(frozen=True)
class Owned:
    """A cloud resource made for a Workspace, as found when looking for orphans."""

    kind: str
    name: str
    namespace: str
    workspace: str
    uid: str

    @property
    def key(self) -> str:
        """The `namespace/name` of the Workspace it was made for."""
        return f"{self.namespace}/{self.workspace}"


class Backend(Protocol):
    name: str
    creates_nodes: bool
    """False for byo: nothing to create, nothing to free, no finalizer needed."""
    surges: bool
    """Whether it can add a spare node for an update and then free the old one
    (kairyu_provisioner.surge)."""
    has_objects: bool
    """True when what it makes are Kubernetes objects in the view (NodeClaims); False when they
    live only in the cloud (agent pools), so orphans must be looked for there."""

    async def prepare(self) -> None:
        """One-time set-up at start-up (e.g. the Karpenter NodePool the claims name)."""
        ...

    def node_selector(self, target: NodeTarget) -> str | None:
        """Label selector of the Workspace's candidate nodes (for messages)."""
        ...

    async def ensure(self, target: NodeTarget, claims: Claims) -> Progress:
        """Create what the plan needs and is missing, remove what it no longer needs."""
        ...

    async def discard(self, target: NodeTarget) -> None:
        """Remove what was made for the target's SKU after the cloud refused it."""
        ...

    async def release(self, namespace: str, name: str, uid: str, claims: Claims) -> list[str]:
        """Start removing everything made for the Workspace; return what still exists."""
        ...

    async def remaining(self, namespace: str, name: str, uid: str) -> list[str]:
        """What still exists of the Workspace's resources, by the source of truth.

        The apiserver or the cloud, read right before the finalizer is removed; never on the hot
        path.
        """
        ...

    async def owned(self, claims: Claims) -> list[Owned]:
        """What this backend made among `claims` (or, without Kubernetes objects, in the cloud)."""
        ...

    async def remove(self, owned: Owned) -> None: ...
