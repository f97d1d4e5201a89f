"""A MultiRoleInference's decisions (pure): its two InferenceSets, its status, KAITO's rules."""

from __future__ import annotations

import copy
from typing import Any

from kairyu_contracts.api.inferenceset import parse_inferenceset
from kairyu_contracts.api.multiroleinference import parse_multirole
from kairyu_contracts.labels import MULTIROLE_LABEL, ROLE_LABEL
from kairyu_contracts.objectstate import ObjectKey, trim
from kairyu_core.kube import APPLIED_DIGEST_ANNOTATION
from kairyu_core.view import View
from kairyu_planner.multiroles import decide_roles, failed, multirole_errors, role_set
from kairyu_planner.webhook import review

UID = "mri-uid-1"


def multirole(**roles: dict[str, Any]) -> dict[str, Any]:
    """KAITO's phi-4-mini example, with the roles' fields overridden."""
    prefill = {"type": "prefill", "replicas": 1, "instanceType": "Standard_NC24ads_A100_v4"}
    decode = {"type": "decode", "replicas": 2, "instanceType": "Standard_NC24ads_A100_v4"}
    prefill |= roles.get("prefill", {})
    decode |= roles.get("decode", {})
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "MultiRoleInference",
        "metadata": {
            "name": "phi-4-mini",
            "namespace": "ml",
            "uid": UID,
            "generation": 1,
            "annotations": {"kaito.sh/runtime": "vllm"},
        },
        "spec": {
            "labelSelector": {"matchLabels": {"apps": "phi-4-mini"}},
            "model": {"name": "phi-4-mini-instruct"},
            "roles": [prefill, decode],
        },
    }


def applied(parent: dict[str, Any], role: str, *, ready: bool, cost: str = "3.67") -> dict:
    """The role's set as the view holds it after the create: as the apiserver stores it (uid,
    generation, the default replica count) and the watcher trims it, with a status."""
    decision = decide_roles(parent, [], {})
    (doc,) = [d for d in decision.create if d["metadata"]["name"].endswith(role)]
    doc = copy.deepcopy(doc)
    doc["metadata"] |= {"generation": 1, "uid": f"{role}-uid", "resourceVersion": "7"}
    doc["metadata"]["managedFields"] = [{"manager": "kairyu-planner"}]
    doc["spec"].setdefault("replicas", 1)
    doc["status"] = {
        "nodeCount": 1 if role == "prefill" else 2,
        "estimatedCostPerHour": cost,
        "conditions": [
            {
                "type": "InferenceSetReady",
                "status": "True" if ready else "False",
                "message": "1/1 replicas are ready" if ready else "0/2 replicas are ready",
                "observedGeneration": 1,
            }
        ],
    }
    return trim("InferenceSet", doc)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_each_role_is_an_inferenceset_of_the_shared_model_as_kaito_makes_it() -> None:
    parent = multirole(decode={"runtimeConfig": "decode-args"})
    parent["spec"]["model"]["modelAccessSecret"] = "hf-token"
    decode = role_set(parent, parent["spec"]["roles"][1])
    parse_inferenceset(decode)  # a valid InferenceSet
    meta = decode["metadata"]
    assert meta["name"] == "phi-4-mini-decode"
    marks = {MULTIROLE_LABEL: "phi-4-mini", ROLE_LABEL: "decode"}
    assert meta["labels"] == marks
    owner = meta["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("MultiRoleInference", UID, True)
    spec = decode["spec"]
    assert spec["replicas"] == 2
    assert spec["labelSelector"] == {"matchLabels": {"apps": "phi-4-mini", **marks}}
    template = spec["template"]
    assert template["metadata"]["labels"] == {"apps": "phi-4-mini", **marks}
    assert template["metadata"]["annotations"] == {"kaito.sh/runtime": "vllm"}
    assert template["resource"] == {"instanceType": "Standard_NC24ads_A100_v4"}
    assert template["inference"] == {
        "preset": {
            "name": "phi-4-mini-instruct",
            "presetOptions": {"modelAccessSecret": "hf-token"},
        },
        "config": "decode-args",
    }
    # A role without replicas leaves the set's count to whoever scales it; without an
    # instanceType the planner picks the SKU.
    free = multirole(prefill={"replicas": None, "instanceType": None})
    prefill = role_set(free, free["spec"]["roles"][0])
    assert "replicas" not in prefill["spec"]
    assert "resource" not in prefill["spec"]["template"]


def test_sets_are_created_once_and_written_again_only_when_the_parent_changes() -> None:
    parent = multirole()
    first = decide_roles(parent, [], {})
    assert first.update == []
    assert sorted(d["metadata"]["name"] for d in first.create) == [
        "phi-4-mini-decode",
        "phi-4-mini-prefill",
    ]
    assert all(APPLIED_DIGEST_ANNOTATION in d["metadata"]["annotations"] for d in first.create)
    assert conditions(first.status)["Ready"] == ("False", "NotReady")
    assert conditions(first.status)["PrefillReady"] == ("False", "PrefillNotFound")
    sets = [applied(parent, "prefill", ready=True), applied(parent, "decode", ready=False)]
    by_name = {s["metadata"]["name"]: s for s in sets}
    view = View(("InferenceSet", "MultiRoleInference"))
    for held in sets:  # as the planner's view holds them
        view.apply(ObjectKey.of("InferenceSet", held), held)
    key = "MultiRoleInference/ml/phi-4-mini"
    settled = decide_roles(parent, view.members(key), by_name)
    assert settled.create == settled.update == []  # a child's status change costs no write
    assert settled.delete == []
    said = conditions(settled.status)
    assert said["PrefillReady"] == ("True", "PrefillReady")
    assert said["DecodeReady"] == ("False", "DecodeNotReady")
    assert said["InferencePoolReady"][0] == "True"
    assert said["Ready"] == ("False", "NotReady")
    decode_message = next(
        c["message"] for c in settled.status["conditions"] if c["type"] == "DecodeReady"
    )
    assert decode_message == "Decode InferenceSet is not ready: 0/2 replicas are ready"
    scaled = multirole(decode={"replicas": 3})
    again = decide_roles(scaled, sets, by_name)
    assert [d["metadata"]["name"] for d in again.update] == ["phi-4-mini-decode"]
    assert again.update[0]["spec"]["replicas"] == 3
    # Written over its own set only, which must still be the one the view showed.
    assert again.update[0]["metadata"]["uid"] == "decode-uid"


def test_the_parent_wins_over_an_edit_of_its_set_but_leaves_a_scaler_its_count() -> None:
    parent = multirole()
    decode = applied(parent, "decode", ready=True)
    decode["spec"]["replicas"] = 5  # kubectl scale of the set
    drifted = decide_roles(parent, [decode], {decode["metadata"]["name"]: decode})
    assert [d["spec"]["replicas"] for d in drifted.update] == [2]  # the role's 2 again
    # A role without replicas: whoever scales the set keeps its count, also when the parent
    # stops naming one (a server-side apply without the field would reset it to 1).
    free = multirole(decode={"replicas": None})
    written = decide_roles(free, [decode], {decode["metadata"]["name"]: decode})
    assert [d["spec"]["replicas"] for d in written.update] == [5]
    free_decode = applied(free, "decode", ready=True)
    free_decode["spec"]["replicas"] = 7
    assert decide_roles(free, [free_decode], {"phi-4-mini-decode": free_decode}).update == []


def test_ready_when_both_roles_are_with_one_cost_for_the_pair() -> None:
    parent = multirole()
    sets = [
        applied(parent, "prefill", ready=True, cost="3.67"),
        applied(parent, "decode", ready=True, cost="7.35"),
    ]
    decision = decide_roles(parent, sets, {s["metadata"]["name"]: s for s in sets})
    assert conditions(decision.status)["Ready"] == ("True", "Ready")
    messages = {c["type"]: c["message"] for c in decision.status["conditions"]}
    assert messages["PrefillReady"] == "Prefill InferenceSet is ready"  # KAITO's words
    assert messages["Ready"] == "All components are ready"
    refused = failed(decision.status, "phi-4-mini-decode", "spec.replicas: Invalid value")
    assert conditions(refused)["Ready"] == ("False", "ReconcileFailed")
    assert decision.status["nodeCount"] == 3
    assert decision.status["estimatedCostPerHour"] == "11.02"
    assert decision.status["observedGeneration"] == 1


def test_a_strangers_set_of_the_same_name_is_never_taken_over() -> None:
    parent = multirole()
    stranger = applied(parent, "prefill", ready=True)
    stranger["metadata"]["ownerReferences"] = []
    decision = decide_roles(parent, [], {stranger["metadata"]["name"]: stranger})
    assert [d["metadata"]["name"] for d in decision.create] == ["phi-4-mini-decode"]
    assert decision.update == []
    assert decision.taken  # looked at again: the stranger's removal wakes nothing
    prefill = next(c for c in decision.status["conditions"] if c["type"] == "PrefillReady")
    assert prefill["status"] == "False"
    assert "exists and is not this MultiRoleInference's" in prefill["message"]


def test_a_deleting_parent_applies_nothing() -> None:
    parent = multirole()
    parent["metadata"]["deletionTimestamp"] = "2026-11-30T10:00:00Z"
    assert decide_roles(parent, [], {}).create == []


def test_kaitos_webhook_rules_with_kaitos_messages() -> None:
    assert multirole_errors(multirole(), None) == []
    two_prefills = multirole(decode={"type": "prefill"})
    assert multirole_errors(two_prefills, None) == [
        "duplicate prefill role: spec.roles",
        "missing field(s): spec.roles (missing decode role)",
    ]
    no_selector = multirole()
    no_selector["spec"]["labelSelector"] = {}
    assert multirole_errors(no_selector, None) == [
        "labelSelector must have at least one matchLabels or matchExpressions entry: "
        "spec.labelSelector"
    ]
    renamed = multirole()
    renamed["spec"]["model"]["name"] = "phi-4"
    assert multirole_errors(renamed, multirole()) == [
        'model name is immutable, was "phi-4-mini-instruct", now "phi-4": spec.model.name'
    ]
    dotted = multirole()
    dotted["metadata"]["name"] = "phi.4"
    assert multirole_errors(dotted, None)[0].startswith("invalid value: phi.4: metadata.name")


def _admission(obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"uid": "u", "operation": "UPDATE" if old else "CREATE"}
    request |= {"object": obj} | ({"oldObject": old} if old else {})
    return review({"request": request})["response"]


def test_the_webhook_judges_each_role_as_the_workspaces_it_makes() -> None:
    parse_multirole(multirole())
    assert _admission(multirole())["allowed"]
    unknown = multirole()
    unknown["spec"]["model"]["name"] = "no-such-model"
    refused = _admission(unknown)
    assert not refused["allowed"]
    message = refused["status"]["message"]
    assert "spec.roles[prefill]: Unsupported preset name no-such-model" in message
    assert "spec.roles[decode]: Unsupported preset name no-such-model" in message
    bad_sku = multirole(decode={"instanceType": "m5.large"})
    refused = _admission(bad_sku)
    assert not refused["allowed"]
    assert "spec.roles[decode]:" in refused["status"]["message"]
    assert "spec.roles[prefill]" not in refused["status"]["message"]
    renamed = multirole()
    renamed["spec"]["model"]["name"] = "phi-4"
    refused = _admission(renamed, multirole())
    assert not refused["allowed"]
    assert "model name is immutable" in refused["status"]["message"]


def test_the_view_wakes_the_parent_for_its_sets_and_the_sets_for_their_workspaces() -> None:
    view = View(("Workspace", "InferenceSet", "MultiRoleInference"))
    parent = multirole()
    touched = view.apply(ObjectKey.of("MultiRoleInference", parent), parent)
    assert touched == {"MultiRoleInference/ml/phi-4-mini"}
    decode = applied(parent, "decode", ready=False)
    touched = view.apply(ObjectKey.of("InferenceSet", decode), decode)
    assert touched == {"InferenceSet/ml/phi-4-mini-decode", "MultiRoleInference/ml/phi-4-mini"}
    assert view.members("MultiRoleInference/ml/phi-4-mini") == [decode]
    assert view.parent("MultiRoleInference/ml/phi-4-mini") is parent
    workspace = {
        "metadata": {
            "name": "phi-4-mini-decode-bcdfg",
            "namespace": "ml",
            "labels": {"inferenceset.kaito.sh/created-by": "phi-4-mini-decode"},
        }
    }
    touched = view.apply(ObjectKey.of("Workspace", workspace), workspace)
    assert touched == {"ml/phi-4-mini-decode-bcdfg", "InferenceSet/ml/phi-4-mini-decode"}
    touched = view.apply(ObjectKey.of("InferenceSet", decode), None)
    assert touched == {"InferenceSet/ml/phi-4-mini-decode", "MultiRoleInference/ml/phi-4-mini"}
    assert view.members("MultiRoleInference/ml/phi-4-mini") == []
    # A view that does not follow the parents' kinds knows Workspace keys only.
    plain = View(("Workspace",))
    assert plain.apply(ObjectKey.of("Workspace", workspace), workspace) == {
        "ml/phi-4-mini-decode-bcdfg"
    }
