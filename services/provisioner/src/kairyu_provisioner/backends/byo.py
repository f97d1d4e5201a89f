"""Bring your own nodes: the Workspace runs on existing nodes that match its labelSelector.

Nothing is created or freed. The candidates are the view's Nodes (the watcher keeps every Node,
labelled or not); the selector, the instance type (or preferredNodes) and readiness are checked
by `readiness.select`.
"""

from __future__ import annotations

from kairyu_provisioner.backends.base import Claims, Owned, Progress
from kairyu_provisioner.node_target import NodeTarget


class ByoBackend:
    name = "byo"
    surges = False  # the user's nodes: no spare is made
    creates_nodes = False
    has_objects = True  # nothing of its own, so nothing to look for outside the view

    async def prepare(self) -> None:
        return None

    def node_selector(self, target: NodeTarget) -> str | None:
        return ",".join(f"{k}={v}" for k, v in sorted(target.match_labels.items())) or None

    async def ensure(self, target: NodeTarget, claims: Claims) -> Progress:
        return Progress()

    async def discard(self, target: NodeTarget) -> None:
        return None

    async def release(self, namespace: str, name: str, uid: str, claims: Claims) -> list[str]:
        return []

    async def remaining(self, namespace: str, name: str, uid: str) -> list[str]:
        return []

    async def owned(self, claims: Claims) -> list[Owned]:
        return []

    async def remove(self, owned: Owned) -> None:
        return None
