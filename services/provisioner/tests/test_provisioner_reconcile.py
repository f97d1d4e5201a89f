"""The provisioner's reconcile against a view built from dicts: what it writes, and what it reads.

No cluster and no NATS: the view holds trimmed Workspaces, Nodes and NodeClaims as the informer
would, the Karpenter backend talks to a RecordingKube, which records every request and refuses
reads unless a test allows them (only a destructive act may read: removing the finalizer, or
freeing what a Workspace missing from the view left behind).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kairyu_contracts.api import Plan
from kairyu_contracts.catalog import load_catalog
from kairyu_contracts.objectstate import Kind, ObjectKey, trim
from kairyu_core.bus import FOLLOWS
from kairyu_core.kube import JSON, errors, resources
from kairyu_core.view import View
from kairyu_provisioner import naming
from kairyu_provisioner.app import Provisioner
from kairyu_provisioner.backends.byo import ByoBackend
from kairyu_provisioner.backends.karpenter import KarpenterBackend
from kairyu_provisioner.settings import (
    KarpenterSettings,
    ProvisionerSettings,
    ProvisioningSettings,
)
from kairyu_testing.recording import Call, RecordingKube
from kairyu_testing.seeds import seed

NS, NAME, UID = "ml", "phi", "ws-uid"
KEY = f"{NS}/{NAME}"
SKU = "Standard_NC6s_v3"
WHEN = "2026-11-30T00:00:00Z"
SETTINGS = ProvisionerSettings(
    backend="karpenter",
    provisioning=ProvisioningSettings(readiness_timeout_s=600, check_interval_s=7),
)


def plan(generation: int, *, count: int = 2, sku: str = SKU) -> dict[str, Any]:
    made = Plan(
        instance_type=sku,
        node_count=count,
        gpus_per_node=1,
        tensor_parallel_size=1,
        pipeline_parallel_size=count,
        dtype="float16",
        runtime="vllm",
        observed_generation=generation,
    )
    return made.model_copy(update={"digest": made.content_digest()}).to_wire()


def workspace(
    *,
    generation: int = 1,
    version: str = "5",
    finalized: bool = True,
    named: bool = True,
    **status: Any,
) -> dict[str, Any]:
    """The Workspace planned for `generation` (2 nodes of SKU), with `status` on top."""
    doc = seed("inference")
    if not named:
        del doc["resource"]["instanceType"]
    doc["metadata"] = {
        "name": NAME,
        "namespace": NS,
        "uid": UID,
        "generation": generation,
        "resourceVersion": version,
    }
    if finalized:
        doc["metadata"]["finalizers"] = [naming.FINALIZER]
    doc["status"] = {"plan": plan(generation), **status}
    return doc


def claim(index: int, *, launched: dict[str, Any] | None = None) -> dict[str, Any]:
    name = naming.node_claim_name(UID, SKU, index)
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {
            "name": name,
            "uid": f"claim-{index}",
            "labels": naming.workspace_labels(NS, NAME),
            "annotations": {naming.UID_KEY: UID},
        },
        "spec": {"requirements": [{"key": "node.kubernetes.io/instance-type", "values": [SKU]}]},
        "status": {"conditions": [launched] if launched else []},
    }


def node(name: str, *, labels: dict[str, str] | None = None, ready: bool = True) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": f"node-{name}",
            "creationTimestamp": WHEN,
            "labels": {
                "node.kubernetes.io/instance-type": SKU,
                **(naming.workspace_labels(NS, NAME) if labels is None else labels),
            },
        },
        "spec": {},
        "status": {
            "conditions": [
                {"type": "Ready", "status": str(ready), "lastTransitionTime": WHEN},
            ],
            "allocatable": {"nvidia.com/gpu": "1"},
        },
    }


def put(view: View, kind: Kind, obj: dict[str, Any]) -> None:
    view.apply(ObjectKey.of(kind, obj), trim(kind, obj))


def view_of(ws: dict[str, Any] | None, *objects: tuple[Kind, dict[str, Any]]) -> View:
    view = View(FOLLOWS["provisioner"])
    if ws is not None:
        put(view, "Workspace", ws)
    for kind, obj in objects:
        put(view, kind, obj)
    return view


def provisioner(
    view: View,
    kube: RecordingKube,
    *,
    byo: bool = False,
    settings: ProvisionerSettings = SETTINGS,
) -> Provisioner:
    backend = (
        ByoBackend()
        if byo
        else KarpenterBackend(kube, KarpenterSettings(), field_manager=settings.service_name)
    )
    return Provisioner(
        settings=settings, kube=kube, view=view, catalog=load_catalog(), backend=backend
    )


def statuses(kube: RecordingKube) -> list[dict[str, Any]]:
    return [c.body["status"] for c in kube.writes_to("/status", "PATCH")]


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def after(ws: dict[str, Any], status: dict[str, Any], version: str) -> dict[str, Any]:
    """The Workspace as the watcher publishes it once `status` was applied."""
    out = copy.deepcopy(ws)
    out["metadata"]["resourceVersion"] = version
    out["status"].update(status)
    return out


async def test_only_missing_nodeclaims_are_created_and_the_finalizer_is_added_once() -> None:
    kube = RecordingKube()  # any GET or LIST fails the test
    view = view_of(workspace(finalized=False), ("NodeClaim", claim(0)))
    again = await provisioner(view, kube).reconcile(KEY)
    created = kube.writes_to(resources.NODECLAIMS.plural, "PATCH")
    assert [c.body["metadata"]["name"] for c in created] == [naming.node_claim_name(UID, SKU, 1)]
    (finalizer,) = [c for c in kube.writes if c.path.endswith(f"/workspaces/{NAME}")]
    # One server-side apply of the set-typed list, guarded by the uid.
    assert finalizer.body["metadata"]["finalizers"] == [naming.FINALIZER]
    assert finalizer.body["metadata"]["uid"] == UID
    # A new Workspace's first progress message waits for the progress interval: nodes Ready
    # sooner need none. Back then, or when a node's change wakes it.
    assert statuses(kube) == []
    assert again == pytest.approx(SETTINGS.provisioning.progress_interval_s, abs=1)


async def test_progress_messages_alone_are_written_at_most_once_per_interval() -> None:
    """A claim that launches changes only the message: held, then written once it is due."""
    kube = RecordingKube()
    settings = SETTINGS.model_copy(
        update={
            "provisioning": SETTINGS.provisioning.model_copy(update={"progress_interval_s": 30})
        }
    )
    ws = workspace()
    view = view_of(ws)
    working = provisioner(view, kube, settings=settings)
    again = await working.reconcile(KEY)  # claims created, the wait starts: nothing to say yet
    assert statuses(kube) == []
    assert again == pytest.approx(30, abs=1)
    wait, at = working._progress_at[KEY]
    working._progress_at[KEY] = (wait, at - 31)  # the nodes take longer than the interval
    await working.reconcile(KEY)
    (first,) = statuses(kube)
    assert (condition(first, "ResourceReady")["reason"], first["state"]) == (
        "Provisioning",
        "Pending",
    )  # the summary travels with it
    launched = {"type": "Launched", "status": "True", "lastTransitionTime": WHEN}
    put(view, "NodeClaim", claim(0, launched=launched))
    again = await working.reconcile(KEY)  # before the view shows the first write ...
    put(view, "Workspace", after(ws, first, "6"))
    put(view, "NodeClaim", claim(1, launched=launched))
    again = await working.reconcile(KEY)  # ... and after
    assert len(statuses(kube)) == 1  # only the message would change: held
    assert again is not None
    assert 25 < again <= 30  # and written when the interval has passed
    # Past the interval the latest message goes out.
    wait, at = working._progress_at[KEY]
    working._progress_at[KEY] = (wait, at - 31)
    await working.reconcile(KEY)
    latest = statuses(kube)[-1]
    assert len(statuses(kube)) == 2
    assert (
        condition(latest, "ResourceReady")["message"]
        != condition(first, "ResourceReady")["message"]
    )
    # A node Ready is a new status, not progress: written at once, whatever the interval.
    put(view, "Workspace", after(ws, latest, "7"))
    put(view, "Node", node("n1"))
    put(view, "Node", node("n2"))
    await working.reconcile(KEY)
    ready = statuses(kube)[-1]
    assert condition(ready, "ResourceReady")["status"] == "True"
    # A node lost a moment later: back to waiting at once, not held by the last progress
    # (nor as a first message: the Workspace shows a ResourceReady, which must not stay True).
    put(view, "Workspace", after(ws, ready, "8"))
    put(view, "Node", node("n2", ready=False))
    await working.reconcile(KEY)
    assert condition(statuses(kube)[-1], "ResourceReady")["reason"] == "Provisioning"


async def test_nodes_ready_in_the_view_are_reported_once_with_the_plans_digest() -> None:
    kube = RecordingKube()
    ws = workspace()
    view = view_of(ws, ("NodeClaim", claim(0)), ("NodeClaim", claim(1)))
    put(view, "Node", node("n1"))
    put(view, "Node", node("n2"))
    working = provisioner(view, kube)
    assert await working.reconcile(KEY) is None
    (status,) = statuses(kube)
    assert status["workerNodes"] == ["n1", "n2"]
    assert status["workerNodesPlanDigest"] == ws["status"]["plan"]["digest"]
    ready = condition(status, "ResourceReady")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "True",
        "NodesReady",
        1,
    )
    # A node changes before the view shows the write: the same report is not sent again ...
    put(view, "Node", node("n2") | {"spec": {"taints": []}})
    await working.reconcile(KEY)
    # ... nor once the view shows it.
    put(view, "Workspace", after(ws, status, "6"))
    await working.reconcile(KEY)
    assert len(kube.writes) == 1
    assert not [c for c in kube.calls if c.method == "GET"]


async def test_a_new_generation_with_the_same_plan_is_reported_again() -> None:
    kube = RecordingKube()
    reported = workspace()
    digest = reported["status"]["plan"]["digest"]
    ready = {
        "type": "ResourceReady",
        "status": "True",
        "reason": "NodesReady",
        "message": f"2 {SKU} node(s) Ready with GPUs",
        "observedGeneration": 1,
        "lastTransitionTime": WHEN,
    }
    edited = workspace(
        generation=2,
        conditions=[ready],
        workerNodes=["n1", "n2"],
        workerNodesPlanDigest=digest,
    )
    assert edited["status"]["plan"]["digest"] == digest  # the same plan for generation 2
    view = view_of(edited, ("NodeClaim", claim(0)), ("NodeClaim", claim(1)))
    put(view, "Node", node("n1"))
    put(view, "Node", node("n2"))
    await provisioner(view, kube).reconcile(KEY)
    (status,) = statuses(kube)
    assert condition(status, "ResourceReady")["observedGeneration"] == 2
    assert status["workerNodesPlanDigest"] == digest


async def test_a_quota_refusal_records_a_replan_request_for_the_current_plan() -> None:
    kube = RecordingKube()
    ws = workspace(named=False)
    refused = {
        "type": "Launched",
        "status": "False",
        "reason": "LaunchFailed",
        "message": "insufficient capacity, all requested instance types were unavailable",
    }
    view = view_of(ws, ("NodeClaim", claim(0, launched=refused)), ("NodeClaim", claim(1)))
    working = provisioner(view, kube)
    again = await working.reconcile(KEY)
    (status,) = statuses(kube)
    assert status["replanRequest"] == {
        "planDigest": ws["status"]["plan"]["digest"],
        "instanceType": SKU,
        "reason": f"InsufficientCapacity for {SKU}: " + refused["message"],
    }
    ready = condition(status, "ResourceReady")
    assert (ready["status"], ready["reason"]) == ("False", "InsufficientCapacity")
    assert "asking the planner for another SKU (re-plan 1 of 3)" in ready["message"]
    deleted = {c.path.rsplit("/", 1)[1] for c in kube.writes_to("nodeclaims", "DELETE")}
    assert deleted == {naming.node_claim_name(UID, SKU, i) for i in range(2)}
    assert kube.writes_to("/events", "POST")  # the history kubectl describe shows
    assert again == SETTINGS.provisioning.refused_retry_s
    # Held: while the view catches up (claims going), nothing is asked of the cloud again.
    writes = len(kube.writes)
    put(view, "Workspace", after(ws, status, "6"))
    await working.reconcile(KEY)
    assert len(kube.writes) == writes


async def test_byo_takes_any_matching_node_of_the_view_and_looks_again_while_too_few() -> None:
    kube = RecordingKube()
    ws = workspace(finalized=False)
    ws["resource"]["labelSelector"] = {"matchLabels": {"pool": "mine"}}
    view = view_of(ws)
    put(view, "Node", node("mine-1", labels={"pool": "mine"}))
    put(view, "Node", node("other", labels={"pool": "theirs"}))
    working = provisioner(view, kube, byo=True)
    again = await working.reconcile(KEY)
    (status,) = statuses(kube)
    ready = condition(status, "ResourceReady")
    assert (ready["status"], ready["reason"]) == ("False", "NotEnoughNodes")
    assert "1 of 2 nodes ready" in ready["message"]
    # A user's node has no Workspace label, so no change wakes this key: a timer does.
    assert again == SETTINGS.provisioning.check_interval_s
    put(view, "Node", node("mine-2", labels={"pool": "mine"}))
    assert await working.reconcile(KEY) is None
    assert statuses(kube)[-1]["workerNodes"] == ["mine-1", "mine-2"]
    assert all("/status" in c.path for c in kube.writes)  # byo adds no finalizer


async def test_the_finalizer_goes_only_after_the_apiserver_confirms_nothing_is_left() -> None:
    kube = RecordingKube(allow_reads=True)
    ws = workspace()
    ws["metadata"]["deletionTimestamp"] = WHEN
    kube.answers[resources.NODECLAIMS.path()] = {"items": []}
    kube.answers[resources.NODES.path()] = {"items": []}
    live = resources.WORKSPACES.path(namespace=NS, name=NAME)
    kube.answers[live] = ws
    await provisioner(view_of(ws), kube).reconcile(KEY)
    reads = [c.path for c in kube.calls if c.method == "GET"]
    assert reads == [live, resources.NODECLAIMS.path(), resources.NODES.path()]
    (removal,) = kube.writes
    assert {"op": "remove", "path": "/metadata/finalizers/0"} in removal.body


async def test_a_claim_the_view_does_not_show_yet_keeps_the_finalizer() -> None:
    kube = RecordingKube(allow_reads=True)
    ws = workspace()
    ws["metadata"]["deletionTimestamp"] = WHEN
    kube.answers[resources.NODECLAIMS.path()] = {"items": [claim(0)]}
    kube.answers[resources.NODES.path()] = {"items": []}
    kube.answers[resources.WORKSPACES.path(namespace=NS, name=NAME)] = ws
    again = await provisioner(view_of(ws), kube).reconcile(KEY)
    assert kube.writes_to("nodeclaims", "DELETE")
    (status,) = statuses(kube)
    assert condition(status, "WorkspaceDeleting")["message"].startswith("waiting for NodeClaim")
    assert again == SETTINGS.provisioning.check_interval_s
    assert not [c for c in kube.writes if c.path.endswith(f"/workspaces/{NAME}")]


async def test_a_deletion_only_the_view_reports_frees_no_node() -> None:
    """A forged or stale state saying the Workspace is going must not free its nodes."""
    kube = RecordingKube(allow_reads=True)
    ws = workspace()
    kube.answers[resources.WORKSPACES.path(namespace=NS, name=NAME)] = copy.deepcopy(ws)
    ws["metadata"]["deletionTimestamp"] = WHEN
    assert await provisioner(view_of(ws), kube).reconcile(KEY) is None
    assert kube.writes == []


class GoneKube(RecordingKube):
    """A recording client whose Workspace GETs answer as the apiserver does for a deleted one."""

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if method == "GET" and path == resources.WORKSPACES.path(namespace=NS, name=NAME):
            self.calls.append(Call(method, path))
            raise errors.NotFoundError(
                "gone", status=404, details={"kind": resources.WORKSPACES.plural, "name": NAME}
            )
        return await super().request(method, path, **kwargs)


async def test_claims_of_a_workspace_missing_from_the_view_go_only_when_the_apiserver_agrees() -> (
    None
):
    settings = SETTINGS.model_copy(
        update={"provisioning": SETTINGS.provisioning.model_copy(update={"gone_confirm_s": 0})}
    )
    # The view lost the Workspace, but the apiserver has it: nothing is removed.
    alive = RecordingKube(allow_reads=True)
    alive.answers[resources.WORKSPACES.path(namespace=NS, name=NAME)] = workspace()
    await provisioner(view_of(None, ("NodeClaim", claim(0))), alive, settings=settings).reconcile(
        KEY
    )
    assert alive.writes == []
    # A 404 for the type (the CRD not served) is no orphan either.
    unserved = RecordingKube(allow_reads=True)
    await provisioner(
        view_of(None, ("NodeClaim", claim(0))), unserved, settings=settings
    ).reconcile(KEY)
    assert unserved.writes == []
    # Two reads that find it gone: the claim is removed.
    gone = GoneKube(allow_reads=True)
    await provisioner(view_of(None, ("NodeClaim", claim(0))), gone, settings=settings).reconcile(
        KEY
    )
    assert [c.path.rsplit("/", 1)[1] for c in gone.writes_to("nodeclaims", "DELETE")] == [
        naming.node_claim_name(UID, SKU, 0)
    ]
    assert len([c for c in gone.calls if c.method == "GET"]) == 2


async def test_the_timeout_counts_from_the_waits_start_while_its_first_message_is_held() -> None:
    """A new Workspace's first progress message is held; its timeout is not."""
    kube = RecordingKube()
    provisioning = SETTINGS.provisioning.model_copy(
        update={"progress_interval_s": 30, "readiness_timeout_s": 45}
    )
    settings = SETTINGS.model_copy(update={"provisioning": provisioning})
    working = provisioner(view_of(workspace()), kube, settings=settings)
    await working.reconcile(KEY)
    assert statuses(kube) == []  # held
    wait, at = working._held_since[KEY]
    working._held_since[KEY] = (wait, at - 50)  # the nodes have not come for 50 s
    await working.reconcile(KEY)
    (status,) = statuses(kube)
    assert condition(status, "ResourceReady")["reason"] == "ProvisioningTimeout"


def _serving_one_node(generation: int = 2) -> dict[str, Any]:
    """A one-node Workspace whose node `a` was chosen for its previous plan; planned anew."""
    ws = workspace(
        generation=generation,
        workerNodes=["a"],
        workerNodesPlanDigest="previous-plan",
        conditions=[
            {
                "type": "InferenceReady",
                "status": "True",
                "reason": "WorkspaceInferenceStatusSuccess",
                "observedGeneration": generation - 1,
                "lastTransitionTime": WHEN,
            }
        ],
    )
    ws["status"]["plan"] = plan(generation, count=1)
    return ws


def _on(index: int, node_name: str) -> dict[str, Any]:
    made = claim(index)
    made["status"]["nodeName"] = node_name
    return made


async def test_an_update_of_a_serving_node_gets_a_spare_which_replaces_it_once_served() -> None:
    kube = RecordingKube()
    ws = _serving_one_node()
    view = view_of(ws, ("NodeClaim", _on(0, "a")), ("Node", node("a")))
    working = provisioner(view, kube)
    await working.reconcile(KEY)
    # A second NodeClaim of the same SKU; the old one stays; the record names the replaced node.
    (created,) = kube.writes_to("/nodeclaims", "PATCH")
    assert created.body["metadata"]["name"] == naming.node_claim_name(UID, SKU, 1)
    assert not kube.writes_to("/nodeclaims", "DELETE")
    # (A progress message while it comes is held a moment: the old node is still reported.)
    assert all(s.get("surgeReplaces") == "a" for s in statuses(kube))

    # The spare is up: both are the new plan's nodes, and ResourceReady says why there are two.
    kube.calls.clear()
    put(view, "NodeClaim", _on(1, "b"))
    put(view, "Node", node("b"))
    await working.reconcile(KEY)
    (both,) = statuses(kube)
    assert both["workerNodes"] == ["a", "b"]
    assert both["workerNodesPlanDigest"] == ws["status"]["plan"]["digest"]
    assert both["surgeReplaces"] == "a"
    assert "a spare node for the update" in condition(both, "ResourceReady")["message"]

    # The deployer reports the new generation serving (on the spare): the old node goes.
    kube.calls.clear()
    served = after(ws, both, "7")
    served["status"]["conditions"] = [
        c for c in served["status"]["conditions"] if c["type"] != "InferenceReady"
    ] + [
        {
            "type": "InferenceReady",
            "status": "True",
            "reason": "WorkspaceInferenceStatusSuccess",
            "observedGeneration": 2,
            "lastTransitionTime": WHEN,
        }
    ]
    put(view, "Workspace", served)
    await working.reconcile(KEY)
    (deleted,) = kube.writes_to("/nodeclaims", "DELETE")
    assert deleted.path.endswith(naming.node_claim_name(UID, SKU, 0))
    (final,) = statuses(kube)
    assert final["workerNodes"] == ["b"]
    assert "surgeReplaces" not in final


async def test_an_update_without_a_spare_node_says_it_goes_in_place_with_downtime() -> None:
    kube = RecordingKube()
    ws = _serving_one_node()
    ws["resource"]["labelSelector"] = {"matchLabels": {"apps": "phi-3"}}
    view = view_of(ws, ("Node", node("a", labels={"apps": "phi-3"})))
    await provisioner(view, kube, byo=True).reconcile(KEY)
    (status,) = statuses(kube)
    assert status["workerNodes"] == ["a"]
    assert "surgeReplaces" not in status
    message = condition(status, "ResourceReady")["message"]
    assert "no spare node for the update (the byo backend makes no spare node)" in message
    assert "replaced in place, with downtime" in message
