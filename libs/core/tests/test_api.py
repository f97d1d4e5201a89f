"""The Workspace models and the CRD generated from them."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from kairyu_core.api import (
    ConditionStatus,
    WorkspaceV1Alpha1,
    WorkspaceV1Beta1,
    parse_workspace,
    render_yaml,
    set_condition,
    workspace_crd,
)

ROOT = Path(__file__).resolve().parents[3]
SEEDS = sorted((ROOT / "tests/manifests").glob("seed-*.yaml"))


def test_committed_crd_matches_the_models() -> None:
    committed = (ROOT / "config/crd/kaito.sh_workspaces.yaml").read_text()
    assert committed == render_yaml(), (
        "CRD drifted from kairyu_core.api: run `make crds` and commit the result"
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
        for node in _walk(version["schema"]["openAPIV3Schema"]):
            assert not {"$ref", "anyOf", "allOf", "oneOf", "title", "default", "const"} & set(node)
            if "properties" in node:
                assert node["type"] == "object"
    assert [v["storage"] for v in crd["spec"]["versions"]] == [False, True]


def test_v1alpha1_printer_columns_are_the_seeds() -> None:
    v1alpha1 = workspace_crd()["spec"]["versions"][0]
    names = [c["name"].upper() for c in v1alpha1["additionalPrinterColumns"]]
    assert names == ["INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]


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
