"""An informer fed over NATS: keeps a service's `View` current and says which Workspaces changed.

For each kind the service reads, it follows the state stream (a snapshot, then each change) and
applies what comes to the view; every Workspace key a change concerns goes to `on_change` (the
controller's enqueue). `synced` is set once every kind's first snapshot is in, so a controller
never reconciles from a half-filled view (it would think nodes missing and create them again).

A Workspace change that differs only in what the watcher itself writes (its summary, the rollout
trace annotation) is still applied to the view, but wakes nobody unless `wake_on_summary` is set:
no service but the watcher acts on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from kairyu_core import metrics
from kairyu_core.bus import Bus, Change, Snapshot
from kairyu_core.objectstate import Kind
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
        return self.view.apply(change.key, change.value)
