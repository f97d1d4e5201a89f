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
service acts on. Likewise a Node's or NodeClaim's conditions count by type, status and reason:
Karpenter rewrites a claim's condition messages several times while it launches.

The watcher computes that digest once per change and sends it with the state (header
`Kairyu-Wake`); the informer compares it with the one it kept for the object, so a change costs a
service no hashing. A state without it (from an older watcher) is hashed here.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from typing import Any, Protocol

import orjson

from kairyu_contracts.api import ConditionType
from kairyu_contracts.objectstate import Kind, ObjectKey, content_digest
from kairyu_core import metrics
from kairyu_core.bus import Change, Snapshot
from kairyu_core.view import View

log = logging.getLogger(__name__)


class StateSource(Protocol):
    """What an informer follows: the NATS `Bus`, or `kairyu_core.bus.servicebus.ServiceBusBus`."""

    def follow_state(self, kind: Kind) -> AsyncGenerator[Snapshot | Change, None]: ...


class Informer:
    """Follows the state of `kinds` on the bus into `view`, calling `on_change(keys)`."""

    def __init__(
        self,
        bus: StateSource,
        view: View,
        on_change: Callable[[Iterable[str]], None],
    ) -> None:
        self._bus = bus
        self.view = view
        self._on_change = on_change
        self.synced = asyncio.Event()
        self._pending: set[Kind] = set(view.kinds)
        self._wakes: dict[ObjectKey, str] = {}  # object -> the wake digest of its view value
        self._counters = {kind: metrics.STATE_CHANGES.labels(kind) for kind in view.kinds}

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
                for key in [k for k in self._wakes if k.kind == kind]:
                    del self._wakes[key]
                for key, value in item.values.items():
                    self._wakes[key] = item.wakes.get(key) or wake_digest(kind, value)
                self._counters[kind].inc(len(item.values))
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
        kind = change.key.kind
        counter = self._counters.get(kind)
        (counter or metrics.STATE_CHANGES.labels(kind)).inc()
        affected = self.view.apply(change.key, change.value)
        if change.value is None:
            self._wakes.pop(change.key, None)
            return affected
        wake = change.wake or wake_digest(kind, change.value)
        before, self._wakes[change.key] = self._wakes.get(change.key), wake
        if before == wake:
            return set()  # in the view now, but nothing any service acts on changed
        return affected


def wake_digest(kind: Kind, value: Mapping[str, Any], *, content: str | None = None) -> str:
    """A digest of what some service decides on; equal digests: a change wakes nobody.

    For kinds without a rule of their own it is the content digest (`content` when the caller
    has it already).
    """
    if kind in ("Node", "NodeClaim"):
        return _digest(_conditions_by_reason(value))
    if kind != "Workspace":
        return content or content_digest(value)
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
    return _digest(decided_on)


def _conditions_by_reason(value: Mapping[str, Any]) -> dict[str, Any]:
    """`value` with each condition cut to its type, status and reason."""
    status = dict(value.get("status") or {})
    if "conditions" in status:
        status["conditions"] = [
            [c.get("type"), c.get("status"), c.get("reason")] for c in status["conditions"] or []
        ]
    meta = {k: v for k, v in (value.get("metadata") or {}).items() if k != "resourceVersion"}
    return {**value, "metadata": meta, "status": status}


def _digest(decided_on: Mapping[str, Any]) -> str:
    text = orjson.dumps(decided_on, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(text).hexdigest()[:32]
