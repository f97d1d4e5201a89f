"""The deployer's reconcile against a view built from dicts: what it writes, and what it reads.

No cluster and no NATS: the view is filled as the informer would fill it (trimmed objects), and
a RecordingKube records every request and refuses reads unless a test allows them.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from kairyu_contracts.api import Plan
from kairyu_contracts.catalog import load_catalog
from kairyu_contracts.objectstate import Kind, ObjectKey, occupant, trim
from kairyu_core.bus import FOLLOWS
from kairyu_core.kube import APPLIED_DIGEST_ANNOTATION, resources
from kairyu_core.view import View
from kairyu_deployer.app import Deployer
from kairyu_deployer.settings import DeployerSettings
from kairyu_testing.recording import Call, RecordingKube
from kairyu_testing.seeds import seed

NS, NAME, UID = "ml", "phi", "ws-uid"
KEY = f"{NS}/{NAME}"
CATALOG = load_catalog()
WHEN = "2026-11-30T00:00:00Z"


def plan(generation: int, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "instance_type": "Standard_NC6s_v3",
        "node_count": 1,
        "gpus_per_node": 1,
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "dtype": "float16",
        "runtime": "vllm",
        "runtime_args": ["--model=microsoft/Phi-3-mini-4k-instruct", "--dtype=float16"],
        "observed_generation": generation,
    }
    made = Plan.model_validate(values | overrides)
    return made.model_copy(update={"digest": made.content_digest()}).to_wire()


def cond(kind: str, status: str, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": WHEN,
    }


def workspace(
    *,
    generation: int = 1,
    version: str = "10",
    conditions: list[dict[str, Any]] | None = None,
    deleting: bool = False,
    seed_name: str = "inference",
    **plan_overrides: Any,
) -> dict[str, Any]:
    """The Workspace with its nodes reported Ready for `generation` and its plan."""
    doc = seed(seed_name)
    doc["metadata"] = {
        "name": NAME,
        "namespace": NS,
        "uid": UID,
        "generation": generation,
        "resourceVersion": version,
    }
    if deleting:
        doc["metadata"]["deletionTimestamp"] = WHEN
        doc["metadata"]["finalizers"] = ["kairyu.io/nodes"]
    made = plan(generation, **plan_overrides)
    doc["status"] = {
        "plan": made,
        "workerNodes": ["node-a"] * made["nodeCount"],
        "workerNodesPlanDigest": made["digest"],
        "conditions": [
            cond("ResourceReady", "True", "NodesReady", "nodes ready", generation),
            *(conditions or []),
        ],
    }
    return doc


def view_of(*objects: tuple[Kind, dict[str, Any]]) -> View:
    view = View(FOLLOWS["deployer"])
    for kind, obj in objects:
        view.apply(ObjectKey.of(kind, obj), trim(kind, obj))
    return view


def deployer(view: View, kube: RecordingKube, *, pending_grace_s: float = 0.0) -> Deployer:
    """A deployer that reports a waiting workload at once, unless `pending_grace_s` says so."""
    settings = DeployerSettings(pending_grace_s=pending_grace_s)
    return Deployer(settings=settings, kube=kube, view=view, catalog=CATALOG)


def path(resource: resources.Resource, name: str = NAME) -> str:
    return resource.path(namespace=NS, name=name)


def requests(kube: RecordingKube) -> list[tuple[str, str]]:
    return [(c.method, c.path) for c in kube.calls]


def stored(call: Call, *, uid: str, **status: Any) -> dict[str, Any]:
    """The object an apply created, as the apiserver would store it."""
    obj = copy.deepcopy(call.body)
    obj["metadata"] |= {"uid": uid, "generation": 1, "resourceVersion": "20"}
    obj["status"] = status
    return obj


def written_conditions(call: Call) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in call.body["status"]["conditions"]}


def as_written(status: Call, version: str) -> dict[str, Any]:
    """The Workspace as the view shows it once the deployer's status write `status` is in."""
    doc = workspace(version=version, conditions=list(status.body["status"]["conditions"]))
    doc["status"].update(
        {k: v for k, v in status.body["status"].items() if k not in ("conditions", "state")}
    )
    return doc


async def first_rollout() -> tuple[RecordingKube, dict[str, Any], dict[str, Any]]:
    """A reconcile with nodes ready: the kube, the Deployment it made, the condition it wrote."""
    kube = RecordingKube()  # no read allowed
    await deployer(view_of(("Workspace", workspace())), kube).reconcile(KEY)
    (deployment,) = kube.writes_to("/deployments/", "PATCH")
    (status,) = kube.writes_to("/status", "PATCH")
    return kube, stored(deployment, uid="d-uid"), written_conditions(status)["InferenceReady"]


async def test_nodes_ready_applies_every_object_and_reports_inference_ready() -> None:
    kube, deployment, inference = await first_rollout()
    config = path(resources.CONFIGMAPS, f"{NAME}-inference-config")
    # No name is held by someone else (the view has no Occupant): one apply per object and
    # the condition, nothing read.
    assert requests(kube) == [
        ("PATCH", config),
        ("PATCH", path(resources.SERVICES)),
        ("PATCH", path(resources.NETWORKPOLICIES)),
        ("PATCH", path(resources.DEPLOYMENTS)),
        ("PATCH", f"{path(resources.WORKSPACES)}/status"),
    ]
    assert len(deployment["metadata"]["annotations"][APPLIED_DIGEST_ANNOTATION]) == 16
    assert APPLIED_DIGEST_ANNOTATION not in (
        deployment["spec"]["template"]["metadata"].get("annotations") or {}
    )  # the pods do not roll for a change of the Service
    assert (inference["status"], inference["reason"], inference["observedGeneration"]) == (
        "False",
        "WorkspaceInferenceStatusPending",
        1,
    )
    assert inference["message"] == "Deployment 0 of 1 replicas ready"


async def test_a_name_someone_else_holds_is_reported_and_nothing_is_applied() -> None:
    """The watcher's Occupant says a user's Service holds the Workspace's name: no apply at all
    (not even the ConfigMap before it), WorkloadInvalid names the Service; once it goes, the
    Occupant's tombstone wakes the Workspace and the rollout goes on."""
    view = view_of(("Workspace", workspace()))
    taken = occupant(NS, NAME, "Service", NAME, uid="user-svc", controller=None)
    woken = view.apply(ObjectKey.of("Occupant", taken), taken)
    assert woken == {KEY}
    kube = RecordingKube()
    service = deployer(view, kube)
    await service.reconcile(KEY)
    assert requests(kube) == [("PATCH", f"{path(resources.WORKSPACES)}/status")]
    written = written_conditions(kube.writes[0])["InferenceReady"]
    assert (written["status"], written["reason"]) == ("False", "WorkloadInvalid")
    assert written["message"].startswith(
        f"Service {NS}/{NAME} already exists and is not owned by Workspace {NAME}"
    )
    assert view.apply(ObjectKey.of("Occupant", taken), None) == {KEY}  # the user deleted it
    await service.reconcile(KEY)
    assert len(kube.writes_to("/services/", "PATCH")) == 1


async def test_once_the_view_shows_the_workload_and_the_condition_nothing_is_written() -> None:
    kube, deployment, _ = await first_rollout()
    (status,) = kube.writes_to("/status", "PATCH")
    view = view_of(("Workspace", as_written(status, "11")), ("Deployment", deployment))
    kube = RecordingKube()  # no read allowed
    # A fresh process: nothing remembered, all from the view.
    await deployer(view, kube).reconcile(KEY)
    assert kube.calls == []


async def test_a_workload_ready_within_the_grace_goes_straight_to_inference_ready() -> None:
    """Within `pending_grace_s` a merely waiting workload is not reported: one write, not two."""
    kube = RecordingKube(allow_reads=True)
    planned = cond("Planned", "True", "PlanCreated", "planned", 1)
    view = view_of(("Workspace", workspace(conditions=[planned])))
    service = deployer(view, kube, pending_grace_s=5.0)
    again = await service.reconcile(KEY)
    assert kube.writes_to("/status") == []  # applied, but Pending is not worth a write yet
    assert again is not None
    assert 0 < again <= 5.0  # judged again when the grace ends
    (applied,) = kube.writes_to("/deployments/", "PATCH")
    now = datetime.now(UTC).isoformat()
    deployment = stored(
        applied,
        uid="d-uid",
        observedGeneration=1,
        replicas=1,
        readyReplicas=1,
        updatedReplicas=1,
    )
    deployment["metadata"]["creationTimestamp"] = now
    view.apply(ObjectKey.of("Deployment", deployment), trim("Deployment", deployment))
    await service.reconcile(KEY)
    (status,) = kube.writes_to("/status", "PATCH")
    written = written_conditions(status)
    assert (written["InferenceReady"]["status"], written["WorkspaceReady"]["status"]) == (
        "True",
        "True",
    )  # the summary comes in the same write
    assert status.body["status"]["state"] == "Ready"


async def test_a_workload_waiting_past_the_grace_is_reported_pending() -> None:
    kube = RecordingKube(allow_reads=True)
    view = view_of(("Workspace", workspace()))
    service = deployer(view, kube, pending_grace_s=5.0)
    await service.reconcile(KEY)
    (applied,) = kube.writes_to("/deployments/", "PATCH")
    deployment = stored(applied, uid="d-uid", observedGeneration=1, replicas=1)
    deployment["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"  # long ago
    view.apply(ObjectKey.of("Deployment", deployment), trim("Deployment", deployment))
    await service.reconcile(KEY)
    (status,) = kube.writes_to("/status", "PATCH")
    written = written_conditions(status)["InferenceReady"]
    assert (written["status"], written["reason"]) == ("False", "WorkspaceInferenceStatusPending")


async def test_before_the_view_shows_its_own_writes_nothing_is_written_twice() -> None:
    kube = RecordingKube(allow_reads=True)
    view = view_of(("Workspace", workspace()))
    service = deployer(view, kube)
    await service.reconcile(KEY)
    done = len(kube.calls)
    again = await service.reconcile(KEY)  # a pod changed; the view is still the old one
    assert kube.calls[done:] == []
    assert again is not None  # it looks again in case the view never shows the apply


async def test_a_generation_bump_with_the_same_plan_rewrites_only_the_condition() -> None:
    _, deployment, inference = await first_rollout()
    view = view_of(
        ("Workspace", workspace(generation=2, version="12", conditions=[inference])),
        ("Deployment", deployment),
    )
    kube = RecordingKube()
    await deployer(view, kube).reconcile(KEY)
    assert requests(kube) == [("PATCH", f"{path(resources.WORKSPACES)}/status")]
    (status,) = kube.writes
    written = written_conditions(status)["InferenceReady"]
    assert (written["reason"], written["observedGeneration"]) == (inference["reason"], 2)


async def test_a_changed_plan_applies_again() -> None:
    _, deployment, inference = await first_rollout()
    view = view_of(
        (
            "Workspace",
            workspace(
                generation=2,
                conditions=[inference],
                runtime_args=["--model=microsoft/Phi-3-mini-4k-instruct", "--dtype=bfloat16"],
            ),
        ),
        ("Deployment", deployment),
    )
    kube = RecordingKube(allow_reads=True)
    await deployer(view, kube).reconcile(KEY)
    (applied,) = kube.writes_to("/deployments/", "PATCH")
    assert applied.body["metadata"]["uid"] == "d-uid"  # the view's: no read of the Deployment
    assert ("GET", path(resources.DEPLOYMENTS)) not in requests(kube)
    digest = applied.body["metadata"]["annotations"][APPLIED_DIGEST_ANNOTATION]
    assert digest != deployment["metadata"]["annotations"][APPLIED_DIGEST_ANNOTATION]


async def test_a_failing_pod_is_the_reason() -> None:
    _, deployment, inference = await first_rollout()
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{NAME}-abc",
            "namespace": NS,
            "uid": "p-uid",
            "labels": {"kaito.sh/workspace": NAME},
        },
        "spec": {
            "nodeName": "node-a",
            "containers": [{"name": NAME, "image": "x", "resources": {"limits": {"cpu": "1"}}}],
        },
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": NAME,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such host"}},
                }
            ],
        },
    }
    view = view_of(
        ("Workspace", workspace(version="11", conditions=[inference])),
        ("Deployment", deployment),
        ("Pod", pod),
    )
    kube = RecordingKube()
    await deployer(view, kube).reconcile(KEY)
    (status,) = kube.writes
    written = written_conditions(status)["InferenceReady"]
    assert (written["status"], written["reason"]) == ("False", "ImagePullError")
    assert "no such host" in written["message"]


async def test_an_oom_kill_names_the_memory_limit_the_view_keeps() -> None:
    _, deployment, inference = await first_rollout()
    terminated = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": NS, "labels": {"kaito.sh/workspace": NAME}},
        "spec": {"containers": [{"name": NAME, "resources": {"limits": {"memory": "1Mi"}}}]},
        "status": {"containerStatuses": [{"name": NAME, "lastState": terminated}]},
    }
    view = view_of(
        ("Workspace", workspace(version="11", conditions=[inference])),
        ("Deployment", deployment),
        ("Pod", pod),
    )
    kube = RecordingKube()
    await deployer(view, kube).reconcile(KEY)
    (status,) = kube.writes
    written = written_conditions(status)["InferenceReady"]
    assert written["reason"] == "ContainerOOMKilled"
    assert "(1Mi)" in written["message"]


async def test_a_deleting_workspace_has_its_workload_deleted_with_a_uid_precondition() -> None:
    _, deployment, inference = await first_rollout()
    view = view_of(
        ("Workspace", workspace(version="11", conditions=[inference], deleting=True)),
        ("Deployment", deployment),
    )
    kube = RecordingKube(allow_reads=True)
    kube.answers[path(resources.WORKSPACES)] = workspace(deleting=True)
    service = deployer(view, kube)
    await service.reconcile(KEY)
    assert [(c.method, c.path, c.body) for c in kube.calls] == [
        ("GET", path(resources.WORKSPACES), None),  # the apiserver confirms it is going
        ("DELETE", path(resources.DEPLOYMENTS), {"preconditions": {"uid": "d-uid"}}),
    ]
    await service.reconcile(KEY)  # the view does not show the deletion yet: not sent twice
    assert len(kube.calls) == 2


async def test_a_deletion_only_the_view_reports_stops_nothing() -> None:
    """A forged or stale state saying the Workspace is going must not stop its workload."""
    _, deployment, inference = await first_rollout()
    view = view_of(
        ("Workspace", workspace(version="11", conditions=[inference], deleting=True)),
        ("Deployment", deployment),
    )
    kube = RecordingKube(allow_reads=True)
    kube.answers[path(resources.WORKSPACES)] = workspace()  # live, not being deleted
    await deployer(view, kube).reconcile(KEY)
    assert kube.writes == []


async def test_a_deleting_workspace_also_loses_the_objects_this_process_applied() -> None:
    kube = RecordingKube(allow_reads=True)
    view = view_of(("Workspace", workspace()))
    service = deployer(view, kube)
    await service.reconcile(KEY)
    view.apply(ObjectKey("Workspace", NS, NAME), trim("Workspace", workspace(deleting=True)))
    kube.answers[path(resources.WORKSPACES)] = workspace(deleting=True)
    done = len(kube.calls)
    await service.reconcile(KEY)
    after = kube.calls[done:]
    assert (after[0].method, after[0].path) == ("GET", path(resources.WORKSPACES))  # confirmed
    deleted = {(c.path, c.body["preconditions"]["uid"]) for c in after[1:]}
    assert {c.method for c in after[1:]} == {"DELETE"}
    assert deleted == {
        (
            path(resources.CONFIGMAPS, f"{NAME}-inference-config"),
            f"uid:{path(resources.CONFIGMAPS, f'{NAME}-inference-config')}",
        ),
        (path(resources.SERVICES), f"uid:{path(resources.SERVICES)}"),
        (path(resources.NETWORKPOLICIES), f"uid:{path(resources.NETWORKPOLICIES)}"),
    }  # the Deployment is not in the view yet; the garbage collector takes it


async def test_the_other_kind_of_workload_is_deleted_only_when_the_view_holds_one() -> None:
    first, deployment, _ = await first_rollout()
    (status,) = first.writes_to("/status", "PATCH")
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": NAME,
            "namespace": NS,
            "uid": "s-uid",
            "labels": {"kaito.sh/workspace": NAME},
            "ownerReferences": deployment["metadata"]["ownerReferences"],
        },
        "spec": {"replicas": 2},
    }
    base = (("Workspace", as_written(status, "11")), ("Deployment", deployment))
    kube = RecordingKube()
    await deployer(view_of(*base, ("StatefulSet", sts)), kube).reconcile(KEY)
    assert [(c.method, c.path, c.body) for c in kube.calls] == [
        ("DELETE", path(resources.STATEFULSETS), {"preconditions": {"uid": "s-uid"}})
    ]
    theirs = copy.deepcopy(sts)
    theirs["metadata"]["ownerReferences"] = []
    kube = RecordingKube()
    await deployer(view_of(*base, ("StatefulSet", theirs)), kube).reconcile(KEY)
    assert kube.calls == []  # not this Workspace's: left alone


async def test_a_tuning_workspace_is_not_the_deployers() -> None:
    kube = RecordingKube()
    await deployer(view_of(("Workspace", workspace(seed_name="tuning"))), kube).reconcile(KEY)
    assert kube.calls == []


async def test_nodes_not_ready_for_this_generation_mean_nothing_to_do() -> None:
    doc = workspace(generation=2)
    doc["status"]["conditions"][0]["observedGeneration"] = 1  # ResourceReady of generation 1
    kube = RecordingKube()
    await deployer(view_of(("Workspace", doc)), kube).reconcile(KEY)
    assert kube.calls == []


async def test_a_workspace_gone_from_the_view_is_nothing_to_do() -> None:
    kube = RecordingKube()
    assert await deployer(view_of(), kube).reconcile(KEY) is None
    assert kube.calls == []


async def test_a_statefulset_without_pods_is_looked_at_again_until_its_refusal_shows() -> None:
    """No change in the view announces a FailedCreate event: the deployer polls for it."""
    kube = RecordingKube(allow_reads=True)
    multi = workspace(node_count=2, pipeline_parallel_size=2)
    service = deployer(view_of(("Workspace", multi)), kube)
    await service.reconcile(KEY)
    (applied,) = kube.writes_to("/statefulsets/", "PATCH")
    sts = stored(applied, uid="s-uid", observedGeneration=1, replicas=0)
    sts["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    view = view_of(("Workspace", multi), ("StatefulSet", sts))
    service = deployer(view, kube)
    events = resources.EVENTS.path(namespace=NS)
    kube.answers[events] = {"items": []}
    again = await service.reconcile(KEY)
    assert again is not None
    assert again <= 15.0  # looked at again: the refusal may come later
    written = written_conditions(kube.writes_to("/status", "PATCH")[-1])["InferenceReady"]
    assert written["reason"] == "WorkspaceInferenceStatusPending"
    kube.answers[events] = {
        "items": [
            {
                "reason": "FailedCreate",
                "type": "Warning",
                "message": 'pods "x-0" is forbidden: violates PodSecurity "restricted:latest"',
                "lastTimestamp": WHEN,
            }
        ]
    }
    await service.reconcile(KEY)
    written = written_conditions(kube.writes_to("/status", "PATCH")[-1])["InferenceReady"]
    assert (written["reason"], "PodSecurity" in written["message"]) == ("FailedCreate", True)
