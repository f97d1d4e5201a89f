"""An informer fed over NATS: keeps a service's `View` current and says which Workspaces changed.

For each kind the service reads, it follows the state stream (a snapshot, then each change) and
applies what comes to the view; every Workspace key a change concerns goes to `on_change` (the
controller's enqueue). `synced` is set once every kind's first snapshot is in, so a controller
never reconciles from a half-filled view (it would think nodes missing and create them again).

A Workspace change that differs only in what no service decides on is applied to the view but
wakes nobody (`wake_digest`): the summary (`WorkspaceReady`, `status.state`), and the other
conditions' messages and transition times (their type, status, reason and observedGeneration
count). Every status write gives a Workspace a new
version; before this rule a rollout woke every service about 26 times, 19 of them for nothing a
service acts on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kairyu_core import metrics
from kairyu_core.api import ConditionType
from kairyu_core.bus import Bus, Change, Snapshot
from kairyu_core.objectstate import Kind, content_digest
from kairyu_core.view import View

log = logging.getLogger(__name__)


class Informer:
    """Follows the state of `kinds` on the bus into `view`, calling `on_change(keys)`."""

    def __init__(
        self,
        bus: Bus,
        view: View,
        on_change: Callable[[Iterable[str]], None],
    ) -> None:
        self._bus = bus
        self.view = view
        self._on_change = on_change
        self.synced = asyncio.Event()
        self._pending: set[Kind] = set(view.kinds)

    async def run(self) -> None:
        """Follow every kind until cancelled."""
        if not self._pending:
            self.synced.set()
        async with asyncio.TaskGroup() as tasks:
            for kind in self.view.kinds:
                tasks.create_task(self._follow(kind))

    async def _follow(self, kind: Kind) -> None:
        async for item in self._bus.follow_state(kind):
            if isinstance(item, Snapshot):
                affected = self.view.replace(kind, item.values)
                metrics.STATE_CHANGES.labels(kind).inc(len(item.values))
                if kind in self._pending:
                    self._pending.discard(kind)
                    log.info("view of %s synced: %d objects", kind, len(item.values))
                    if not self._pending:
                        self.synced.set()
            else:
                affected = self._apply(item)
            if affected:
                self._on_change(affected)

    def _apply(self, change: Change) -> set[str]:
        metrics.STATE_CHANGES.labels(change.key.kind).inc()
        before = self.view.get(change.key)
        affected = self.view.apply(change.key, change.value)
        if (
            before is not None
            and change.value is not None
            and wake_digest(change.key.kind, before) == wake_digest(change.key.kind, change.value)
        ):
            return set()  # in the view now, but nothing any service acts on changed
        return affected


def wake_digest(kind: Kind, value: Mapping[str, Any]) -> str:
    """A digest of what some service decides on; equal digests: a change wakes nobody."""
    if kind != "Workspace":
        return content_digest(value)
    meta = value.get("metadata") or {}
    status = value.get("status") or {}
    annotations = meta.get("annotations") or {}
    decided_on = {
        # Everything outside metadata and status is spec (KAITO's Workspace has no `spec` key).
        "spec": {k: v for k, v in value.items() if k not in {"metadata", "status"}},
        "metadata": [
            meta.get("uid"),
            meta.get("generation"),
            meta.get("deletionTimestamp"),
            meta.get("finalizers"),
            meta.get("labels"),
            annotations,
        ],
        "status": {k: v for k, v in status.items() if k not in {"conditions", "state"}},
        "conditions": sorted(
            [c.get("type"), c.get("status"), c.get("reason"), c.get("observedGeneration")]
            for c in status.get("conditions") or []
            if c.get("type") != ConditionType.WORKSPACE_READY
        ),
    }
    text = json.dumps(decided_on, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
