"""A set's scale step as spans in its own trace: the step, each new replica, its node wait."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kairyu_contracts.objectstate import ObjectKey
from kairyu_core.rollout_trace import rollout_ids
from kairyu_core.view import View
from kairyu_planner.inferencesets import child_manifest, child_name
from kairyu_planner.scalesteps import ScaleStep, step_spans
from kairyu_planner.setcontrol import InferenceSetController
from kairyu_testing.recording import RecordingKube

UID = "set-uid-7"
SET_PATH = "/apis/kaito.sh/v1beta1/namespaces/ml/inferencesets/phi"


def the_set(replicas: int, generation: int) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "metadata": {"name": "phi", "namespace": "ml", "uid": UID, "generation": generation},
        "spec": {
            "replicas": replicas,
            "labelSelector": {"matchLabels": {"apps": "phi"}},
            "template": {"inference": {"preset": {"name": "phi-4-mini-instruct"}}},
        },
    }


def replica(
    ordinal: int, created: str, nodes_at: str | None, ready_at: str | None
) -> dict[str, Any]:
    doc = child_manifest(the_set(1, 1), child_name("phi", UID, ordinal))
    doc["metadata"] |= {"uid": f"c{ordinal}", "generation": 1, "creationTimestamp": created}
    conditions = []
    if nodes_at:
        conditions.append(
            {"type": "ResourceReady", "status": "True", "lastTransitionTime": nodes_at}
        )
    if ready_at:
        conditions.append(
            {
                "type": "InferenceReady",
                "status": "True",
                "observedGeneration": 1,
                "lastTransitionTime": ready_at,
            }
        )
    doc["status"] = {"conditions": conditions, "plan": {"nodeCount": 1}}
    return doc


def test_a_step_is_its_replicas_each_split_into_the_node_wait_and_the_model_start() -> None:
    step = ScaleStep(
        key="ml/phi",
        uid=UID,
        generation=2,
        started=datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC),
        before=1,
        wanted=3,
        created=[child_name("phi", UID, 1), child_name("phi", UID, 2)],
    )
    children = [
        replica(0, "2026-11-30T09:00:00Z", "2026-11-30T09:01:00Z", "2026-11-30T09:02:00Z"),
        replica(1, "2026-11-30T10:00:01Z", "2026-11-30T10:00:41Z", "2026-11-30T10:01:01Z"),
        replica(2, "2026-11-30T10:00:01Z", "2026-11-30T10:00:31Z", None),
    ]
    now = datetime(2026, 11, 30, 10, 2, 0, tzinfo=UTC)
    plan = step_spans(step, children, now=now)
    assert plan.name == "scale 1→3"
    assert (plan.start, plan.end) == (step.started, now)
    assert plan.attributes["kairyu.replicas.added"] == step.created
    first, second = plan.children
    assert first.name == f"replica {step.created[0]}"
    nodes, model = first.children
    assert nodes.name.startswith("nodes ")
    assert (nodes.end - nodes.start).total_seconds() == 40  # the GPU node's wait
    assert (model.end - model.start).total_seconds() == 20  # the pod's start
    assert first.error is None
    # Not ready when the step ended: the replica says so, its node wait is still there.
    assert second.error == "not ready when the step ended"
    assert [c.name.split()[0] for c in second.children] == ["nodes"]


async def test_the_controller_records_a_step_in_the_set_s_trace_once_it_is_done(
    spans: InMemorySpanExporter,
) -> None:
    view = View(("Workspace", "InferenceSet"))
    first = replica(0, "2026-11-30T09:00:00Z", "2026-11-30T09:01:00Z", "2026-11-30T09:02:00Z")
    view.apply(ObjectKey.of("Workspace", first), first)
    scaled = the_set(2, 2)
    view.apply(ObjectKey.of("InferenceSet", scaled), scaled)
    kube = RecordingKube(allow_reads=True)
    kube.answers[SET_PATH] = scaled
    controller = InferenceSetController(kube=kube, view=view, field_manager="kairyu-planner")

    await controller.reconcile("InferenceSet/ml/phi")  # 1 → 2: one child created
    (created,) = kube.writes_to("/workspaces", "POST")
    trace_id = rollout_ids(UID, 2)[0]
    assert not [s for s in spans.get_finished_spans() if s.name.startswith("scale")]

    second = replica(1, "2026-11-30T10:00:00Z", "2026-11-30T10:00:30Z", "2026-11-30T10:00:50Z")
    assert second["metadata"]["name"] == created.body["metadata"]["name"]
    view.apply(ObjectKey.of("Workspace", second), second)
    await controller.reconcile("InferenceSet/ml/phi")  # both ready: the step is done
    mine = [
        s
        for s in spans.get_finished_spans()
        if s.context is not None and s.context.trace_id == trace_id
    ]
    names = sorted(s.name for s in mine)
    assert names == sorted(
        [
            "rollout InferenceSet ml/phi",
            "scale 1→2",
            f"replica {second['metadata']['name']}",
            f"nodes {second['metadata']['name']}",
            f"model {second['metadata']['name']}",
        ]
    )
    step = next(s for s in mine if s.name == "scale 1→2")
    nodes = next(s for s in mine if s.name.startswith("nodes "))
    assert nodes.parent is not None
    assert nodes.end_time is not None
    assert nodes.start_time is not None
    assert (nodes.end_time - nodes.start_time) / 1e9 == 30
    assert step.attributes is not None
    assert step.attributes["kairyu.replicas.wanted"] == 2

    await controller.reconcile("InferenceSet/ml/phi")  # recorded once
    assert len([s for s in spans.get_finished_spans() if s.name == "scale 1→2"]) == 1
