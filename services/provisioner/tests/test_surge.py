"""A spare node for updating a serving single-node Workspace (pure): when, which, and after."""

from __future__ import annotations

from typing import Any

from kairyu_contracts.api import LabelSelector
from kairyu_provisioner import naming
from kairyu_provisioner.backends.karpenter import wanted_claims
from kairyu_provisioner.node_target import NodeTarget
from kairyu_provisioner.surge import surge_of


def workspace(
    *,
    nodes: list[str],
    reported_for: str,
    digest: str = "new",
    serving_generation: int | None = 1,
    generation: int = 2,
    node_count: int = 1,
    inference: bool = True,
    replaces: str | None = None,
) -> dict[str, Any]:
    conditions = []
    if serving_generation is not None:
        conditions.append(
            {"type": "InferenceReady", "status": "True", "observedGeneration": serving_generation}
        )
    doc: dict[str, Any] = {
        "metadata": {"name": "ws", "namespace": "ml", "uid": "u1", "generation": generation},
        "status": {
            "plan": {"digest": digest, "nodeCount": node_count, "replicas": 1},
            "workerNodes": nodes,
            "workerNodesPlanDigest": reported_for,
            "conditions": conditions,
        },
    }
    if replaces:
        doc["status"]["surgeReplaces"] = replaces
    if inference:
        doc["inference"] = {"preset": {"name": "phi-3-mini-4k-instruct"}}
    return doc


def test_a_workspace_whose_node_served_its_previous_plan_begins_a_surge() -> None:
    surge = surge_of(workspace(nodes=["a"], reported_for="old"))
    assert (surge.phase, surge.nodes, surge.replaces) == ("begin", ("a",), "a")
    # The deployer may already say it waits for the new generation's nodes: still a surge.
    waiting = workspace(nodes=["a"], reported_for="old", serving_generation=None)
    assert surge_of(waiting).phase == "begin"
    # While the spare is made no worker node is reported; the record says which one it replaces.
    coming = workspace(nodes=[], reported_for="", replaces="a")
    assert (surge_of(coming).phase, surge_of(coming).nodes) == ("begin", ("a",))


def test_no_surge_for_a_first_rollout_a_tuning_job_or_several_nodes() -> None:
    assert surge_of(workspace(nodes=["a"], reported_for="new")).phase == "none"
    assert surge_of(workspace(nodes=[], reported_for="")).phase == "none"
    assert surge_of(workspace(nodes=["a"], reported_for="old", inference=False)).phase == "none"
    wide = workspace(nodes=["a", "b"], reported_for="old", node_count=2)
    assert surge_of(wide).phase == "none"
    # Two nodes for a one-node plan without a surge on record: a scale-down, not a surge.
    assert surge_of(workspace(nodes=["a", "b"], reported_for="old")).phase == "none"


def test_with_both_nodes_reported_it_rolls_until_the_new_generation_serves() -> None:
    rolling = workspace(nodes=["a", "b"], reported_for="new", replaces="a")
    assert (surge_of(rolling).phase, surge_of(rolling).replaces) == ("rolling", "a")
    # Planned again meanwhile: the same two nodes, for the newer plan.
    again = workspace(nodes=["a", "b"], reported_for="older", serving_generation=2, replaces="a")
    assert surge_of(again).phase == "rolling"
    done = workspace(nodes=["b", "a"], reported_for="new", serving_generation=2, replaces="a")
    # The new generation serves on the spare: it stays, the replaced node goes.
    assert (surge_of(done).phase, surge_of(done).nodes) == ("done", ("b",))
    assert surge_of(done, [pod("b")]).nodes == ("b",)
    # The update needed no new pod (its template did not change): the pod stayed on the old
    # node, which stays; the spare goes.
    assert surge_of(done, [pod("a")]).nodes == ("a",)
    assert surge_of(done, [pod("a"), pod("b")]).nodes == ("b",)


def pod(node_name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"p-{node_name}"},
        "spec": {"nodeName": node_name},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def target(count: int, keep: tuple[str, ...] = ()) -> NodeTarget:
    return NodeTarget(
        namespace="ml",
        name="ws",
        uid="u1",
        generation=2,
        instance_type="Standard_NC6s_v3",
        node_count=count,
        disk_gib=100,
        selector=LabelSelector(),
        keep_nodes=keep,
    )


def claim(index: int, node_name: str, *, uid: str = "u1") -> dict[str, Any]:
    return {
        "metadata": {
            "name": naming.node_claim_name("u1", "Standard_NC6s_v3", index),
            "annotations": {naming.UID_KEY: uid},
        },
        "status": {"nodeName": node_name},
    }


def name(index: int) -> str:
    return naming.node_claim_name("u1", "Standard_NC6s_v3", index)


def test_claims_keep_their_numbers_through_a_surge_and_back() -> None:
    assert wanted_claims(target(1), []) == {name(0): 0}
    # The spare takes the next free number beside the serving claim.
    assert wanted_claims(target(2), [claim(0, "a")]) == {name(0): 0, name(1): 1}
    # Done: the spare's claim is kept, the old one is not wanted any more.
    both = [claim(0, "a"), claim(1, "b")]
    assert wanted_claims(target(1, keep=("b",)), both) == {name(1): 1}
    # Afterwards the one live claim stays as it is, and the next surge takes number 0 again.
    assert wanted_claims(target(1), [claim(1, "b")]) == {name(1): 1}
    assert wanted_claims(target(2), [claim(1, "b")]) == {name(0): 0, name(1): 1}
    # While the spare is made, the serving claim and the spare's are both kept.
    assert wanted_claims(target(2, keep=("b",)), [claim(0, ""), claim(1, "b")]) == {
        name(0): 0,
        name(1): 1,
    }
    # A refused spare: the serving node's claim is the one kept, whatever its number.
    assert wanted_claims(target(1, keep=("b",)), [claim(0, "x"), claim(1, "b")]) == {name(1): 1}
