"""Bring your own nodes: the Workspace runs on existing nodes that match its labelSelector.

Nothing is created or freed. The selector's matchLabels filter on the server; matchExpressions,
the instance type (or preferredNodes) and readiness are checked by `readiness.select`.
"""

from __future__ import annotations

from kairyu_provisioner.backends.base import Owned, Progress
from kairyu_provisioner.target import Target


class ByoBackend:
    name = "byo"
    creates_nodes = False

    async def prepare(self) -> None:
        return None

    def node_selector(self, target: Target) -> str | None:
        return ",".join(f"{k}={v}" for k, v in sorted(target.match_labels.items())) or None

    async def ensure(self, target: Target) -> Progress:
        return Progress()

    async def discard(self, target: Target) -> None:
        return None

    async def release(self, namespace: str, name: str, uid: str) -> list[str]:
        return []

    async def owned(self) -> list[Owned]:
        return []

    async def remove(self, owned: Owned) -> None:
        return None
