"""The Event on a Workspace whose rollout phase runs long: `kairyu why`'s story, unasked.

A slow phase is one with no events at all (a NodeClaim that never registers, a pod that never
turns Ready), so it is found by looking, not by being woken: every `check_every_s` the rollouts in
progress are compared with their phase's limit (kairyu_watcher.settings.SlowPhaseSettings). One
that passed it gets one Warning Event, "SlowPhase", whose message is what `kairyu why` would say
(kairyu_contracts.rollout_story), read from the cluster then. Only those few reads go to the
apiserver; the rollouts in progress are the Workspaces the watcher already follows.

Each (Workspace, generation, phase) is told once: a restarted watcher first reads the Events it
would add to, and one already there that begins with the phase and generation is left alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from kairyu_contracts.rollout_story import (
    PhaseInProgress,
    phase_in_progress,
    slow_phase_message,
    slow_phase_prefix,
)
from kairyu_core import rollout_facts
from kairyu_core.kube import KubeClient, workspace_events
from kairyu_watcher.settings import SlowPhaseSettings

JSON = dict[str, Any]
log = logging.getLogger(__name__)

REASON = "SlowPhase"
_FINISHED_KEPT = 200  # finished first rollouts that say how long a phase usually takes here


class SlowPhases:
    """The rollouts in progress, and which of their slow phases were told."""

    def __init__(self, settings: SlowPhaseSettings, *, kube: KubeClient, component: str) -> None:
        self._settings = settings
        self._kube = kube
        self._component = component
        self._in_progress: dict[str, JSON] = {}  # namespace/name -> the Workspace as last seen
        self._told: dict[str, set[str]] = {}  # uid -> {"<phase> (generation N)", ...}
        # uid -> a finished first rollout, oldest first: each Workspace once, however many
        # events it has after it finished
        self._finished: OrderedDict[str, JSON] = OrderedDict()

    def workspace_changed(self, key: str, raw: JSON, *, deleted: bool) -> None:
        """Follow a Workspace's rollout from its latest state."""
        if deleted:
            self._forget(key, raw)
            return
        meta = raw.get("metadata") or {}
        if (meta.get("generation") or 1) > 1 and "managedFields" not in meta:
            # A state from the stream (trimmed): without the managed fields, when the edit that
            # began this generation happened is unknown, so it waits for the next change.
            return
        if phase_in_progress(raw, datetime.now(UTC)) is not None:
            self._in_progress[key] = raw
            return
        self._forget(key, raw)
        state = (raw.get("status") or {}).get("state")
        if state in ("Ready", "Succeeded") and meta.get("generation") == 1:
            self._finished[str(meta.get("uid"))] = raw
            self._finished.move_to_end(str(meta.get("uid")))
            if len(self._finished) > _FINISHED_KEPT:
                self._finished.popitem(last=False)

    def _forget(self, key: str, raw: JSON) -> None:
        self._in_progress.pop(key, None)
        self._told.pop(str((raw.get("metadata") or {}).get("uid")), None)

    async def run(self) -> None:
        """Look at the rollouts in progress every `check_every_s`, until cancelled."""
        while True:
            await asyncio.sleep(self._settings.check_every_s)
            await self.check()

    async def check(self) -> None:
        """Record an Event on each rollout whose phase passed its limit, once per phase."""
        now = datetime.now(UTC)
        for raw in list(self._in_progress.values()):
            progress = phase_in_progress(raw, now)
            if progress is None:
                continue
            limit = self._settings.limit(progress.phase.name)
            uid, prefix = str(raw["metadata"].get("uid")), slow_phase_prefix(progress)
            if progress.elapsed_s <= limit or prefix in self._told.get(uid, ()):
                continue
            await self._tell(raw, progress, limit, now)
            self._told.setdefault(uid, set()).add(prefix)

    async def _tell(
        self, raw: JSON, progress: PhaseInProgress, limit: float, now: datetime
    ) -> None:
        facts = await rollout_facts.read_facts(
            self._kube, raw, now=now, others=list(self._finished.values())
        )
        prefix = slow_phase_prefix(progress)
        if any(
            event.get("reason") == REASON and str(event.get("message", "")).startswith(prefix)
            for event in facts.events
        ):
            return  # told by this watcher before a restart, or by the replica that led then
        message = slow_phase_message(facts, progress, limit)
        log.info("%s/%s: %s", raw["metadata"]["namespace"], raw["metadata"]["name"], message)
        await workspace_events.record(
            self._kube,
            raw,
            reason=REASON,
            message=message,
            component=self._component,
            type="Warning",
        )
