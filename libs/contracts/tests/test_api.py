"""The Workspace models and the CRD generated from them."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from kairyu_contracts.api import (
    ConditionStatus,
    Plan,
    WorkspaceV1Alpha1,
    WorkspaceV1Beta1,
    parse_workspace,
    render_yaml,
    set_condition,
    workspace_crd,
)
from kairyu_contracts.api.crd import CRDS, inferenceset_crd

ROOT = Path(__file__).resolve().parents[3]
SEEDS = sorted((ROOT / "tests/manifests").glob("seed-*.yaml"))


@pytest.mark.parametrize("plural", sorted(CRDS))
def test_committed_crd_matches_the_models(plural: str) -> None:
    committed = (ROOT / f"config/crd/kaito.sh_{plural}.yaml").read_text()
    assert committed == render_yaml(plural), (
        "CRD drifted from kairyu_contracts.api: run `make crds` and commit the result"
    )


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.stem)
def test_seed_manifests_round_trip_through_the_models(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    ws = WorkspaceV1Alpha1.model_validate(doc)
    assert ws.to_wire() == doc


def _walk(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found


def test_generated_schema_is_structural() -> None:
    crd = workspace_crd()
    for version in crd["spec"]["versions"]:
        defaults = []
        for node in _walk(version["schema"]["openAPIV3Schema"]):
            assert not {"$ref", "anyOf", "allOf", "oneOf", "title", "const"} & set(node)
            if "properties" in node:
                assert node["type"] == "object"
            if "default" in node:
                defaults.append(node["default"])
        # pydantic's defaults stay out; the only apiserver defaults are spec.replicas: 1.
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        assert spec["properties"]["replicas"]["default"] == 1
        assert defaults == [{}, 1]
    assert [v["storage"] for v in crd["spec"]["versions"]] == [False, True]


def _columns(version: int, *, wide: bool) -> list[str]:
    found = workspace_crd()["spec"]["versions"][version]["additionalPrinterColumns"]
    return [c["name"].upper() for c in found if wide or not c.get("priority")]


def test_v1alpha1_printer_columns_are_the_seeds() -> None:
    assert _columns(0, wide=False) == [
        "INSTANCE",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "WORKSPACEREADY",
        "AGE",
    ]


def test_v1beta1_shows_kaitos_columns_and_wide_output_adds_the_plan_after_them() -> None:
    kaito = [
        "INSTANCE",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "JOBSTARTED",
        "WORKSPACESUCCEEDED",
        "TARGETNODECOUNT",
        "STATE",
        "AGE",
    ]
    assert _columns(1, wide=False) == kaito
    assert _columns(1, wide=True) == [*kaito, "PLANNEDINSTANCE", "NODES", "COSTPERHOUR"]


def test_both_versions_have_the_scale_subresource_on_spec_replicas() -> None:
    for version in workspace_crd()["spec"]["versions"]:
        assert version["subresources"]["scale"] == {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.inference.replicas",
            "labelSelectorPath": ".status.inference.selector",
        }


def test_the_models_reject_a_wrong_type_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"resource\.count"):
        WorkspaceV1Alpha1.model_validate({"resource": {"count": "two", "labelSelector": {}}})


def test_set_condition_keeps_transition_time_until_status_changes() -> None:
    first = set_condition(None, type="Planned", status=ConditionStatus.FALSE, reason="Planning")
    again = set_condition(
        [first], type="Planned", status=ConditionStatus.FALSE, reason="StillPlanning"
    )
    assert again.last_transition_time == first.last_transition_time
    assert again.reason == "StillPlanning"
    flipped = set_condition([again], type="Planned", status=ConditionStatus.TRUE, reason="Planned")
    assert flipped.last_transition_time > first.last_transition_time


def test_parse_workspace_picks_the_version_from_api_version() -> None:
    doc = yaml.safe_load(SEEDS[0].read_text())
    assert isinstance(parse_workspace(doc), WorkspaceV1Alpha1)
    beta = parse_workspace({**doc, "apiVersion": "kaito.sh/v1beta1"})
    assert isinstance(beta, WorkspaceV1Beta1)
    assert beta.resource.instance_type == "Standard_NC6s_v3"
    with pytest.raises(ValidationError, match="v2"):
        parse_workspace({**doc, "apiVersion": "kaito.sh/v2"})


def _plan(instance_type: str = "Standard_NC6s_v3", dtype: str = "float16") -> dict[str, Any]:
    plan: dict[str, Any] = {
        "instanceType": instance_type,
        "nodeCount": 1,
        "gpusPerNode": 1,
        "tensorParallelSize": 1,
        "pipelineParallelSize": 1,
        "dtype": dtype,
        "runtime": "vllm",
        "runtimeArgs": [f"--dtype={dtype}"],
    }
    plan["digest"] = Plan.model_validate(plan).content_digest()
    return plan


OLD_PLAN = _plan()
NEW_PLAN = _plan("Standard_NC24ads_A100_v4", "bfloat16")  # a re-plan to another SKU


def _reported(
    *,
    plan: dict[str, Any],
    nodes_for: dict[str, Any],
    generation: int = 2,
    ready_generation: int = 2,
) -> WorkspaceV1Alpha1:
    """The seed at `generation`, planned as `plan`, with nodes the provisioner chose for
    `nodes_for` and reported Ready (ResourceReady) at `ready_generation`."""
    doc = yaml.safe_load(SEEDS[0].read_text())
    doc["metadata"]["generation"] = generation
    doc["status"] = {
        "plan": {**plan, "observedGeneration": generation},
        "workerNodes": ["gpu-1"],
        "workerNodesPlanDigest": nodes_for["digest"],
        "conditions": [
            {
                "type": "ResourceReady",
                "status": "True",
                "reason": "NodesReady",
                "message": "1 node(s) Ready with GPUs",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": ready_generation,
            }
        ],
    }
    return WorkspaceV1Alpha1.model_validate(doc)


def test_nodes_reported_for_this_generation_and_plan_are_ready() -> None:
    assert _reported(plan=NEW_PLAN, nodes_for=NEW_PLAN).nodes_ready()


def test_nodes_reported_ready_for_an_earlier_generation_are_not_ready() -> None:
    # Just after an edit the planner has planned generation 2; ResourceReady still speaks of 1.
    assert not _reported(plan=OLD_PLAN, nodes_for=OLD_PLAN, ready_generation=1).nodes_ready()


def test_nodes_chosen_for_another_plan_are_not_ready() -> None:
    # Re-planned to another SKU: the old SKU's nodes are still the recorded, Ready ones.
    assert not _reported(plan=NEW_PLAN, nodes_for=OLD_PLAN).nodes_ready()


def test_a_plan_without_a_digest_has_no_ready_nodes() -> None:
    unnamed = {k: v for k, v in OLD_PLAN.items() if k != "digest"}
    assert not _reported(plan=unnamed, nodes_for=OLD_PLAN).nodes_ready()


def test_the_plan_digest_covers_what_the_nodes_and_workload_run_not_the_explanation() -> None:
    plan = Plan.model_validate(OLD_PLAN)
    explained = plan.model_copy(
        update={
            "reason": "cheapest",
            "estimated_cost_per_hour": "3.06",
            "replan_reason": "QuotaExceeded",
            "excluded_instance_types": ["Standard_NC12s_v3"],
            "observed_generation": 7,
            "digest": "anything",
        }
    )
    assert explained.content_digest() == plan.content_digest() == OLD_PLAN["digest"]
    changes: list[dict[str, Any]] = [
        {"node_count": 2},
        {"runtime_args": []},
        {"max_model_len": 4096},
    ]
    for change in changes:
        assert plan.model_copy(update=change).content_digest() != plan.content_digest()
    assert NEW_PLAN["digest"] != OLD_PLAN["digest"]


def test_no_inference_set_name_or_category_shadows_a_workspace_name() -> None:
    """kubectl resolves a category before a kind: a shared one breaks `kubectl get workspace x`."""
    workspace = workspace_crd()["spec"]["names"]
    names = inferenceset_crd()["spec"]["names"]
    workspace_words = {workspace["singular"], workspace["plural"], *workspace["shortNames"]}
    set_words = {
        names["singular"],
        names["plural"],
        *names["shortNames"],
        *names.get("categories", []),
    }
    assert not workspace_words & set_words
