"""The InferenceSet's decisions (pure): which children to create or delete, and its status."""

from __future__ import annotations

from typing import Any

from kairyu_contracts.api import parse_workspace
from kairyu_contracts.api.inferenceset import parse_inferenceset
from kairyu_contracts.labels import INFERENCESET_LABEL
from kairyu_contracts.objectstate import ObjectKey
from kairyu_core.view import View
from kairyu_planner.inferencesets import child_manifest, child_name, decide
from kairyu_planner.setcontrol import InferenceSetController
from kairyu_planner.webhook import review
from kairyu_testing.recording import RecordingKube

UID = "set-uid-1"


def inference_set(replicas: int | None = 3, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "template": {
            "metadata": {"labels": {"team": "ml"}, "annotations": {"kaito.sh/runtime": "vllm"}},
            "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
            "inference": {"preset": {"name": "phi-4-mini-instruct"}},
        },
        "labelSelector": {"matchLabels": {"apps": "phi-4-mini"}},
        **spec,
    }
    if replicas is not None:
        body["replicas"] = replicas
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "metadata": {"name": "phi", "namespace": "ml", "uid": UID, "generation": 1},
        "spec": body,
    }


def child(ordinal: int, *, ready: bool = True, nodes: int = 1, cost: str = "3.67") -> dict:
    name = child_name("phi", UID, ordinal)
    doc = child_manifest(inference_set(), name)
    doc["metadata"] |= {
        "uid": f"c{ordinal}",
        "generation": 1,
        "creationTimestamp": f"2026-11-30T10:00:0{ordinal}Z",
    }
    conditions = [
        {"type": "InferenceReady", "status": "True" if ready else "False", "observedGeneration": 1}
    ]
    doc["status"] = {
        "state": "Ready" if ready else "Pending",
        "conditions": conditions,
        "plan": {"nodeCount": nodes, "estimatedCostPerHour": cost},
    }
    return doc


def test_children_are_kaito_s_workspaces_with_the_set_s_selector_and_label() -> None:
    name = child_name("phi", UID, 0)
    assert name.startswith("phi-")
    assert len(name) == len("phi-") + 5
    assert child_name("phi", UID, 0) == name  # the same again: a retried create is harmless
    assert child_name("phi", UID, 1) != name
    doc = child_manifest(inference_set(), name)
    workspace = parse_workspace(doc)
    assert workspace.resource.instance_type == "Standard_NC24ads_A100_v4"
    assert workspace.resource.label_selector.match_labels == {"apps": "phi-4-mini"}
    assert doc["metadata"]["labels"] == {"team": "ml", INFERENCESET_LABEL: "phi"}
    assert doc["metadata"]["annotations"] == {"kaito.sh/runtime": "vllm"}
    (owner,) = doc["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("InferenceSet", UID, True)


def test_missing_replicas_are_created_and_status_counts_the_ready_ones() -> None:
    decision = decide(inference_set(3), [child(0), child(1, ready=False)])
    assert decision.create == [child_name("phi", UID, 2)]
    assert decision.delete == []
    status = decision.status
    assert (status["replicas"], status["readyReplicas"]) == (2, 1)
    assert status["selector"] == f"{INFERENCESET_LABEL}=phi"
    (ready,) = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        "InferenceSetReady",
        "False",
        "inferencesetNotReady",
    )
    assert ready["message"] == "1/3 replicas are ready"
    assert status["estimatedCostPerHour"] == "7.34"  # one figure for the whole set
    assert status["nodeCount"] == 2


def test_scaling_down_deletes_the_newest_children_first_and_zero_deletes_all() -> None:
    children = [child(0), child(1), child(2)]
    decision = decide(inference_set(1), children)
    assert [c["metadata"]["name"] for c in decision.delete] == [
        child_name("phi", UID, 2),
        child_name("phi", UID, 1),
    ]
    assert decision.status["replicas"] == 1
    assert decision.status["conditions"][0]["status"] == "True"
    zero = decide(inference_set(0), children)
    assert len(zero.delete) == 3
    assert zero.status["replicas"] == 0
    assert zero.status["conditions"][0]["message"] == "0/0 replicas are ready"


def test_a_name_still_held_by_a_deleting_child_is_not_reused() -> None:
    going = child(0)
    going["metadata"]["deletionTimestamp"] = "2026-11-30T11:00:00Z"
    decision = decide(inference_set(1), [going])
    assert decision.create == [child_name("phi", UID, 1)]


def test_children_of_a_predecessor_with_the_same_name_are_neither_counted_nor_deleted() -> None:
    foreign = child(0)
    foreign["metadata"]["ownerReferences"][0]["uid"] = "an-older-set"
    decision = decide(inference_set(0), [foreign])
    assert decision.delete == []
    assert decision.status["replicas"] == 0


def test_node_count_limit_caps_the_replicas_by_the_nodes_their_plans_need() -> None:
    children = [child(0, nodes=2), child(1, nodes=2)]
    decision = decide(inference_set(5, nodeCountLimit=5), children)
    assert decision.create == []  # a third replica of 2 nodes would make 6 > 5
    message = decision.status["conditions"][0]["message"]
    assert "limited to 2 replicas of 2 node(s) by nodeCountLimit 5" in message


def test_the_default_is_one_replica() -> None:
    assert len(decide(inference_set(None), []).create) == 1


def test_both_versions_parse_and_kaito_s_example_shape_is_valid() -> None:
    for version in ("kaito.sh/v1alpha1", "kaito.sh/v1beta1"):
        parsed = parse_inferenceset({**inference_set(2), "apiVersion": version})
        assert parsed.spec.replicas == 2


def _admission(obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    request = {"request": {"uid": "u", "operation": operation, "object": obj}}
    return review(request)["response"]


def test_the_webhook_judges_a_set_s_template_as_a_workspace() -> None:
    assert _admission(inference_set())["allowed"]
    unknown = inference_set()
    unknown["spec"]["template"]["inference"]["preset"]["name"] = "no-such-model"
    refused = _admission(unknown)
    assert not refused["allowed"]
    assert "spec.template: Unsupported preset name no-such-model" in refused["status"]["message"]
    wrong_sku = inference_set()
    wrong_sku["spec"]["template"]["resource"]["instanceType"] = "Standard_D2s_v3_nope"
    assert _admission(wrong_sku)["allowed"]  # KAITO lets unknown Azure D-series through, warned
    bad = inference_set()
    bad["spec"]["template"]["resource"]["instanceType"] = "m5.large"
    assert not _admission(bad)["allowed"]


def test_with_a_node_limit_one_replica_is_made_until_its_plan_shows_its_nodes() -> None:
    first = decide(inference_set(3, nodeCountLimit=4), [])
    assert len(first.create) == 1
    unplanned = child(0)
    unplanned["status"].pop("plan")
    assert decide(inference_set(3, nodeCountLimit=4), [unplanned]).create == []
    # Planned at 2 nodes a replica: 2 replicas fit the limit of 4.
    planned = decide(inference_set(3, nodeCountLimit=4), [child(0, nodes=2)])
    assert planned.create == [child_name("phi", UID, 1)]


def test_a_name_another_workspace_holds_is_skipped() -> None:
    taken = frozenset({child_name("phi", UID, 0)})
    assert decide(inference_set(1), [], taken).create == [child_name("phi", UID, 1)]


async def test_a_set_the_apiserver_no_longer_holds_gets_no_new_child() -> None:
    """Its deletion shows in the view first as a child going: that child is not replaced."""
    body = inference_set(replicas=1)
    going = child(0)
    going["metadata"]["deletionTimestamp"] = "2026-11-30T10:01:00Z"
    view = View(("Workspace", "InferenceSet"))
    view.apply(ObjectKey.of("InferenceSet", body), body)
    view.apply(ObjectKey.of("Workspace", going), going)
    kube = RecordingKube(allow_reads=True)
    controller = InferenceSetController(kube=kube, view=view, field_manager="kairyu-planner")
    path = "/apis/kaito.sh/v1beta1/namespaces/ml/inferencesets/phi"

    await controller.reconcile("InferenceSet/ml/phi")  # the apiserver: 404
    assert kube.writes == []

    kube.answers[path] = body  # still there: the child a user deleted is replaced
    await controller.reconcile("InferenceSet/ml/phi")
    (created,) = kube.writes_to("/workspaces", "POST")
    assert created.body["metadata"]["name"] == child_name("phi", UID, 1)
