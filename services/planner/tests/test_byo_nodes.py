"""Your own nodes: KAITO's instanceType rule; Workspaces sized from their nodes' GPU labels."""

from __future__ import annotations

from typing import Any

import pytest

from kairyu_contracts.api import LabelSelector, parse_workspace
from kairyu_contracts.catalog import Cloud, load_catalog
from kairyu_localenv.nodes import GpuNodeSpec, gpu_node_manifest
from kairyu_planner.byonodes import byo_sku
from kairyu_planner.planning import PlanError, PlanReason
from kairyu_planner.settings import PlanningSettings
from kairyu_planner.validated_plan import plan_checked
from kairyu_planner.validation import validate
from kairyu_testing.seeds import seed

BYO = PlanningSettings(node_provisioner="byo", max_cost_per_hour=1.0)
SELECTOR = LabelSelector(match_labels={"apps": "phi-3"})
A100 = GpuNodeSpec(
    instance_type="Standard_NC24ads_A100_v4",
    gpu_product="NVIDIA-A100-PCIE-80GB",
    gpu_count=1,
    gpu_memory_mib=81920,
)
T4 = GpuNodeSpec(
    instance_type="Standard_NC4as_T4_v3",
    gpu_product="Tesla-T4",
    gpu_count=1,
    gpu_memory_mib=16384,
)


def node(spec: GpuNodeSpec, name: str, **labels: str) -> dict[str, Any]:
    doc = gpu_node_manifest(name, spec, labels={"apps": "phi-3"})
    doc["metadata"]["labels"] |= labels
    return doc


def without_instance_type() -> dict[str, Any]:
    doc = seed("inference")
    del doc["resource"]["instanceType"]
    return doc


def test_a_new_workspace_naming_an_instance_type_is_refused_on_byo_nodes() -> None:
    named = parse_workspace(seed("inference"))
    refused = validate(named, planning=BYO)
    assert any(
        e.startswith(
            "instanceType must be empty when node auto-provisioning is disabled (BYO scenario)"
        )
        for e in refused.errors
    )
    # Sized from its nodes at plan time: no SKU of the catalog judges it (nor the $1/h ceiling).
    assert validate(parse_workspace(without_instance_type()), planning=BYO).allowed
    # Admitted before (or under another mode): kept on update, and the planner still plans it.
    assert validate(named, named, planning=BYO).allowed
    assert validate(named, planning=BYO, admission=False, resource_checks=False).allowed
    # With provisioned nodes the instance type stays optional and allowed.
    assert validate(named, planning=PlanningSettings()).allowed


def test_the_nodes_gpu_labels_are_the_sku_of_the_plan() -> None:
    nodes = [node(A100, "a-1"), node(A100, "a-2"), node(T4, "elsewhere")]
    nodes[2]["metadata"]["labels"]["apps"] = "other"
    sku = byo_sku(nodes, SELECTOR, Cloud.AZURE)
    assert (sku.name, sku.gpu_model, sku.gpu_count, sku.gpu_memory_gib) == (
        "Standard_NC24ads_A100_v4",
        "NVIDIA-A100-PCIE-80GB",
        1,
        80,
    )
    assert sku.price is None
    # Without the instance-type label (bare metal), the GPU product names them.
    bare = [node(A100, "a-1"), node(A100, "a-2")]
    for n in bare:
        del n["metadata"]["labels"]["node.kubernetes.io/instance-type"]
    assert byo_sku(bare, SELECTOR, Cloud.AZURE).name == "NVIDIA-A100-PCIE-80GB"
    # The CUDA labels decide the dtype: an A100 is 8.0, so bfloat16.
    cc = [node(A100, "a-1", **{"nvidia.com/cuda.compute.major": "8"})]
    assert byo_sku(cc, SELECTOR, Cloud.AZURE).bf16
    assert not byo_sku([node(A100, "a-1")], SELECTOR, Cloud.AZURE).bf16  # unknown: float16


@pytest.mark.parametrize(
    ("nodes", "reason", "says"),
    [
        ([], PlanReason.NO_MATCHING_NODES, "No nodes found matching the specified label selector"),
        (
            [node(A100, "a-1"), node(T4, "t-1")],
            PlanReason.NODES_NOT_UNIFORM,
            "differ in GPU product, count or memory",
        ),
        (
            [{"metadata": {"name": "bare", "labels": {"apps": "phi-3"}}}],
            PlanReason.GPU_LABELS_MISSING,
            "node bare lacks the GPU label(s) nvidia.com/gpu.product",
        ),
    ],
)  # fmt: skip
def test_nodes_that_do_not_say_what_they_offer_are_explained(
    nodes: list[dict[str, Any]], reason: PlanReason, says: str
) -> None:
    with pytest.raises(PlanError) as refused:
        byo_sku(nodes, SELECTOR, Cloud.AZURE)
    assert refused.value.reason == reason
    assert says in refused.value.message


def test_a_workspace_is_planned_on_its_own_nodes_without_a_price() -> None:
    catalog = load_catalog()
    sku = byo_sku([node(A100, "a-1")], SELECTOR, Cloud.AZURE)
    ws = parse_workspace(without_instance_type())
    plan = plan_checked(ws, catalog, BYO, byo=sku).plan
    assert plan.instance_type == "Standard_NC24ads_A100_v4"
    assert plan.node_count == 1
    assert plan.estimated_cost_per_hour is None  # your nodes: no ceiling applies (BYO has $1/h)
    assert plan.reason is not None
    assert plan.reason.startswith("your nodes matching resource.labelSelector")
    # A model bigger than one node takes several of them, as on provisioned nodes.
    big = without_instance_type()
    big["inference"]["preset"] = {
        "name": "llama-3.3-70b-instruct",
        "presetOptions": {"modelAccessSecret": "hf-token"},
    }
    assert plan_checked(parse_workspace(big), catalog, BYO, byo=sku).plan.node_count == 2
    # A Workspace that names its SKU (admitted before byo) is planned on that SKU, its nodes'
    # labels notwithstanding.
    unbounded = PlanningSettings(node_provisioner="byo")
    named = plan_checked(parse_workspace(seed("inference")), catalog, unbounded, byo=sku)
    assert named.plan.instance_type == seed("inference")["resource"]["instanceType"]
