"""The provisioner's pure parts: names, node selection, failure classification, manifests."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kairyu_contracts.api import ConditionStatus, LabelSelector
from kairyu_contracts.api.meta import LabelSelectorRequirement
from kairyu_provisioner import app, naming
from kairyu_provisioner.backends.azure import TAG_UID, agent_pool
from kairyu_provisioner.backends.karpenter import claim_state, node_claim
from kairyu_provisioner.failures import classify
from kairyu_provisioner.node_target import NodeTarget
from kairyu_provisioner.readiness import select, why_unusable
from kairyu_provisioner.settings import AzureSettings, KarpenterSettings, ProvisionerSettings

UID = "5f1e2d3c-0000-4000-8000-000000000001"


def target(**overrides: Any) -> NodeTarget:
    values: dict[str, Any] = {
        "namespace": "ml",
        "name": "phi",
        "uid": UID,
        "generation": 1,
        "instance_type": "Standard_NC6s_v3",
        "node_count": 2,
        "disk_gib": 80,
        "selector": LabelSelector(match_labels={"apps": "phi-3"}),
        "match_labels": {"apps": "phi-3"},
    }
    return NodeTarget(**(values | overrides))


def node(
    name: str,
    *,
    sku: str = "Standard_NC6s_v3",
    ready: bool = True,
    gpus: str = "1",
    labels: dict[str, str] | None = None,
    **meta: Any,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"node.kubernetes.io/instance-type": sku, **(labels or {})},
            **meta,
        },
        "spec": {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "allocatable": {"nvidia.com/gpu": gpus},
        },
    }


# ---------------------------------------------------------------------- names


def test_names_are_deterministic_valid_and_distinct() -> None:
    pool = naming.agent_pool_name(UID, "Standard_NC6s_v3")
    assert re.fullmatch(r"[a-z][a-z0-9]{0,11}", pool)
    assert pool == naming.agent_pool_name(UID, "standard_nc6s_v3")  # case does not matter
    assert pool != naming.agent_pool_name(UID, "Standard_NC12s_v3")
    assert pool != naming.agent_pool_name(UID.replace("1", "2"), "Standard_NC6s_v3")
    claims = {naming.node_claim_name(UID, "Standard_NC6s_v3", i) for i in range(4)}
    assert len(claims) == 4
    assert all(re.fullmatch(r"ws[0-9a-f]{9}", c) for c in claims)


# ---------------------------------------------------------------------- readiness


def test_only_ready_gpu_nodes_of_the_planned_type_count_and_the_others_say_why() -> None:
    nodes = [
        node("a"),
        node("b", ready=False),
        node("c", sku="Standard_NC12s_v3"),
        node("d", gpus="0"),
        node("e", deletionTimestamp="2026-11-24T00:00:00Z"),
    ]
    selection = select(nodes, count=2, instance_type="Standard_NC6s_v3")
    assert selection.nodes == ["a"]
    assert not selection.complete
    assert selection.rejected == {
        "b": "not Ready",
        "c": "instance type Standard_NC12s_v3, not Standard_NC6s_v3",
        "d": "no allocatable nvidia.com/gpu (device plugin not running)",
        "e": "being deleted",
    }
    assert selection.summary().startswith("1 of 2 nodes ready (b: not Ready; c: instance type")


def test_serving_nodes_are_kept_then_preferred_ones_then_by_name() -> None:
    nodes = [node(n) for n in ("a", "b", "c", "d")]
    assert select(nodes, count=2, instance_type="Standard_NC6s_v3").nodes == ["a", "b"]
    assert select(nodes, count=2, instance_type="Standard_NC6s_v3", current=["d"]).nodes == [
        "a",
        "d",
    ]
    chosen = select(nodes, count=2, instance_type="Standard_NC6s_v3", preferred=["c", "b"])
    assert chosen.nodes == ["b", "c"]


def test_a_preferred_node_may_be_of_another_instance_type() -> None:
    other = node("x", sku="Standard_NC24ads_A100_v4")
    assert why_unusable(other, "Standard_NC6s_v3", preferred=["x"]) is None
    assert why_unusable(other, "Standard_NC6s_v3", preferred=[]) is not None


def test_unregistered_karpenter_nodes_do_not_count_yet() -> None:
    fresh = node("k")
    fresh["spec"]["taints"] = [{"key": "karpenter.sh/unregistered", "effect": "NoExecute"}]
    assert why_unusable(fresh, "Standard_NC6s_v3", ()) == "not registered yet"


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (LabelSelector(), {}, True),
        (LabelSelector(match_labels={"a": "1"}), {"a": "1", "b": "2"}, True),
        (LabelSelector(match_labels={"a": "1"}), {"a": "2"}, False),
        (
            LabelSelector(
                match_expressions=[LabelSelectorRequirement(key="a", operator="In", values=["1"])]
            ),
            {"a": "1"},
            True,
        ),
        (
            LabelSelector(
                match_expressions=[
                    LabelSelectorRequirement(key="a", operator="NotIn", values=["1"])
                ]
            ),
            {},
            True,
        ),
        (
            LabelSelector(match_expressions=[LabelSelectorRequirement(key="a", operator="Exists")]),
            {"b": "1"},
            False,
        ),
        (
            LabelSelector(
                match_expressions=[LabelSelectorRequirement(key="a", operator="DoesNotExist")]
            ),
            {"a": "1"},
            False,
        ),
    ],
)
def test_label_selectors_follow_kubernetes_semantics(
    selector: LabelSelector, labels: dict[str, str], expected: bool
) -> None:
    assert selector.matches(labels) is expected


def test_byo_selection_filters_by_the_selector() -> None:
    nodes = [node("a", labels={"apps": "phi-3"}), node("b", labels={"apps": "other"})]
    chosen = select(
        nodes,
        count=2,
        instance_type="Standard_NC6s_v3",
        selector=LabelSelector(match_labels={"apps": "phi-3"}),
    )
    assert chosen.nodes == ["a"]
    assert chosen.rejected == {}  # b is not a candidate at all


# ---------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("code", "message", "reason", "capacity"),
    [
        ("QuotaExceeded", "exceeding approved quota", "QuotaExceeded", True),
        ("SkuNotAvailable", "not available", "SKUNotAvailable", True),
        ("ZonalAllocationFailed", "no capacity", "AllocationFailed", True),
        ("OperationNotAllowed", "results in exceeding approved Cores quota", "QuotaExceeded", True),
        (
            None,
            "all requested instance types were unavailable during launch",
            "InsufficientCapacity",
            True,
        ),
        ("InvalidParameter", "bad pool name", "InvalidParameter", False),
        (None, "instance type not found", "ProvisioningFailed", False),
    ],
)
def test_cloud_refusals_are_classified(
    code: str | None, message: str, reason: str, capacity: bool
) -> None:
    failure = classify(code, message, instance_type="X")
    assert (failure.reason, failure.capacity, failure.message) == (reason, capacity, message)


def test_a_nodeclaim_that_failed_to_launch_reports_karpenter_s_message() -> None:
    claim = {
        "metadata": {"name": "ws123"},
        "spec": {
            "requirements": [
                {
                    "key": "node.kubernetes.io/instance-type",
                    "operator": "In",
                    "values": ["p5.48xlarge"],
                }
            ]
        },
        "status": {
            "conditions": [
                {
                    "type": "Launched",
                    "status": "False",
                    "reason": "InsufficientCapacity",
                    "message": "all requested instance types were unavailable during launch",
                }
            ]
        },
    }
    line, failure = claim_state(claim)
    assert line is not None
    assert line.startswith("NodeClaim ws123: Launched False InsufficientCapacity")
    assert failure is not None
    assert (failure.reason, failure.instance_type, failure.capacity) == (
        "InsufficientCapacity",
        "p5.48xlarge",
        True,
    )


def test_a_claim_not_yet_reconciled_is_waiting_not_failed() -> None:
    claim = {
        "metadata": {"name": "ws1"},
        "status": {
            "conditions": [
                {"type": "Launched", "status": "True"},
                {"type": "Registered", "status": "Unknown", "reason": "AwaitingReconciliation"},
            ]
        },
    }
    assert claim_state(claim) == ("NodeClaim ws1: waiting for Registered", None)
    ready = {
        "metadata": {"name": "ws1"},
        "status": {
            "conditions": [
                {"type": t, "status": "True"}
                for t in ("Launched", "Registered", "Initialized", "Ready")
            ]
        },
    }
    assert claim_state(ready) == (None, None)


# ---------------------------------------------------------------------- manifests


def test_a_node_claim_carries_kaito_s_labels_taint_sku_and_disk() -> None:
    claim = node_claim(target(), 1, KarpenterSettings())
    meta, spec = claim["metadata"], claim["spec"]
    assert meta["name"] == naming.node_claim_name(UID, "Standard_NC6s_v3", 1)
    assert meta["labels"] == {
        "apps": "phi-3",
        "kaito.sh/workspace": "phi",
        "kaito.sh/workspacenamespace": "ml",
        "karpenter.sh/nodepool": "kaito",
        "kaito.sh/machine-type": "gpu",
    }
    assert meta["annotations"][naming.UID_KEY] == UID
    assert spec["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    requirements = {r["key"]: r["values"] for r in spec["requirements"]}
    assert requirements["node.kubernetes.io/instance-type"] == ["Standard_NC6s_v3"]
    assert requirements["karpenter.sh/nodepool"] == ["kaito"]
    assert spec["resources"]["requests"]["storage"] == "80Gi"
    assert spec["nodeClassRef"]["kind"] == "KWOKNodeClass"


def test_an_agent_pool_has_size_count_labels_taint_disk_and_owner_tags() -> None:
    pool = agent_pool(target(node_count=3), AzureSettings())
    props = pool.properties
    assert props is not None
    assert (props.vm_size, props.count, props.os_disk_size_gb, props.mode) == (
        "Standard_NC6s_v3",
        3,
        80,
        "User",
    )
    assert props.node_taints == ["sku=gpu:NoSchedule"]
    assert props.node_labels is not None
    assert props.node_labels["kaito.sh/workspace"] == "phi"
    assert props.tags is not None
    assert props.tags[TAG_UID] == UID


# ---------------------------------------------------------------------- settings


def test_the_azure_backend_refuses_to_start_half_configured() -> None:
    with pytest.raises(ValueError, match="KAIRYU_AZURE__SUBSCRIPTION_ID"):
        ProvisionerSettings(backend="azure")
    with pytest.raises(ValueError, match="only for a local endpoint"):
        ProvisionerSettings(
            backend="azure",
            azure=AzureSettings(
                subscription_id="s", resource_group="r", cluster_name="c", credential="none"
            ),
        )


def reported(*, generation: int, ready_generation: int, nodes_for: str) -> dict[str, Any]:
    """A Workspace whose plan has digest "b", with Ready nodes reported for `nodes_for`."""
    ready = {"type": "ResourceReady", "status": "True", "observedGeneration": ready_generation}
    return {
        "metadata": {"generation": generation},
        "status": {
            "plan": {"digest": "b", "observedGeneration": generation},
            "workerNodes": ["gpu-1"],
            "workerNodesPlanDigest": nodes_for,
            "conditions": [ready],
        },
    }


def test_nodes_are_settled_only_when_reported_for_this_generation_and_plan() -> None:
    # Settled means "nothing to report": an edit (same plan) or a re-plan must be reported again.
    assert app._settled(reported(generation=2, ready_generation=2, nodes_for="b"))
    assert not app._settled(reported(generation=2, ready_generation=1, nodes_for="b"))
    assert not app._settled(reported(generation=2, ready_generation=2, nodes_for="a"))


def test_worker_nodes_name_the_plan_they_were_chosen_for_and_go_with_it() -> None:
    live = {"workerNodes": ["gpu-1"], "workerNodesPlanDigest": "a"}
    ready = (ConditionStatus.TRUE, "NodesReady", "")
    assert app._worker_nodes(live, ready, (["gpu-2"], "b")) == (["gpu-2"], "b")
    waiting = (ConditionStatus.UNKNOWN, "Provisioning", "")
    assert app._worker_nodes(live, waiting, None) == ([], None)
    assert app._worker_nodes(live, None, None) == (["gpu-1"], "a")  # deleting: kept
