"""The watcher's summary check against recorded writes: it corrects a stale summary, and only that.

Every service writes the summary with its own status; the watcher writes only when what it sees
does not match the conditions. No cluster and no NATS: a RecordingKube records the writes.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any, cast

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kairyu_core.bus import StateBus
from kairyu_core.kube import WatchEvent
from kairyu_testing.recording import RecordingKube
from kairyu_testing.seeds import seed
from kairyu_watcher.app import Watcher
from kairyu_watcher.settings import WatcherSettings

NS, NAME, UID = "ml", "ws", "ws-uid"
WHEN = "2026-11-30T08:00:00Z"


def condition(kind: str, status: str, reason: str, *, generation: int = 1, **extra: Any) -> Any:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": extra.get("message", f"{kind} says so"),
        "lastTransitionTime": WHEN,
        "observedGeneration": generation,
    }


def workspace(*conditions: dict[str, Any], generation: int = 1, state: str = "Pending") -> Any:
    doc = seed("inference")
    doc["metadata"] = {"name": NAME, "namespace": NS, "uid": UID, "generation": generation}
    doc["status"] = {"conditions": list(conditions), "state": state}
    return doc


def watcher(kube: RecordingKube) -> Watcher:
    bus = cast(StateBus, SimpleNamespace(serves_snapshots=False))  # only summaries are written
    return Watcher(settings=WatcherSettings(), bus=bus, kube=kube)


PLANNED = condition("Planned", "True", "PlanCreated")
RESOURCES = condition("ResourceReady", "True", "NodesReady")
INFERENCE = condition("InferenceReady", "True", "WorkspaceInferenceStatusSuccess")
READY = condition("WorkspaceReady", "True", "WorkspaceReady", message="Workspace is ready")
WAITING = condition("WorkspaceReady", "False", "Pending", message="waiting for InferenceReady")


async def test_a_summary_the_writers_left_right_is_not_written_again() -> None:
    kube = RecordingKube()
    ready = workspace(PLANNED, RESOURCES, INFERENCE, READY, state="Ready")
    await watcher(kube).on_workspace(WatchEvent("MODIFIED", ready))
    assert kube.writes == []


async def test_nothing_is_written_before_a_service_has_reported_the_generation() -> None:
    """A new Workspace, or an edit: the planner's own write brings the summary, no race with it."""
    kube = RecordingKube()
    service = watcher(kube)
    await service.on_workspace(WatchEvent("ADDED", workspace()))
    edited = workspace(PLANNED, RESOURCES, INFERENCE, READY, generation=2, state="Ready")
    await service.on_workspace(WatchEvent("MODIFIED", edited))
    assert kube.writes == []


async def test_a_stale_summary_is_corrected_every_time_it_goes_stale(
    spans: InMemorySpanExporter,
) -> None:
    kube = RecordingKube()
    service = watcher(kube)
    ready = workspace(PLANNED, RESOURCES, INFERENCE, READY, state="Ready")
    await service.on_workspace(WatchEvent("MODIFIED", ready))  # seen Ready: outcome recorded
    # A writer with a stale view wrote "waiting for InferenceReady" over it.
    stale = workspace(PLANNED, RESOURCES, INFERENCE, WAITING, state="Pending")
    await service.on_workspace(WatchEvent("MODIFIED", stale))
    (first,) = kube.writes_to("/status", "PATCH")
    said = {c["type"]: c for c in first.body["status"]["conditions"]}["WorkspaceReady"]
    assert (said["status"], first.body["status"]["state"]) == ("True", "Ready")
    # The same stale event again (queued before the write): not written twice.
    await service.on_workspace(WatchEvent("MODIFIED", copy.deepcopy(stale)))
    assert len(kube.writes) == 1
    # The write shows; days later another race leaves it stale: corrected again.
    await service.on_workspace(WatchEvent("MODIFIED", ready))
    await service.on_workspace(WatchEvent("MODIFIED", copy.deepcopy(stale)))
    assert len(kube.writes) == 2
    # Putting Ready back records no second outcome: the rollout ended when it first said so.
    assert [s.name for s in spans.get_finished_spans() if s.name in {"ready", "failed"}] == []
