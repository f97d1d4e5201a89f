"""The tuner's reconcile against a view built from dicts: what it writes, and what it reads.

No cluster and no NATS: the view is filled as the informer would fill it (trimmed objects), and
a RecordingKube records every request and refuses reads unless a test allows them.
"""

from __future__ import annotations

import copy
from typing import Any

from kairyu_contracts.api import Plan
from kairyu_contracts.catalog import load_catalog
from kairyu_contracts.objectstate import Kind, ObjectKey, trim
from kairyu_core.bus import FOLLOWS
from kairyu_core.kube import APPLIED_DIGEST_ANNOTATION, resources
from kairyu_core.view import View
from kairyu_testing.recording import Call, RecordingKube
from kairyu_testing.seeds import seed
from kairyu_tuner import tuning_manifests
from kairyu_tuner.app import Tuner
from kairyu_tuner.settings import TunerSettings

NS, NAME, UID = "ml", "tune", "ws-uid"
KEY = f"{NS}/{NAME}"
CATALOG = load_catalog()
WHEN = "2026-11-30T00:00:00Z"
STATUS = f"{resources.WORKSPACES.path(namespace=NS, name=NAME)}/status"
JOB = resources.JOBS.path(namespace=NS, name=NAME)
CONFIG = resources.CONFIGMAPS.path(namespace=NS, name=f"{NAME}-tuning-config")


def plan(generation: int) -> dict[str, Any]:
    made = Plan.model_validate(
        {
            "instance_type": "Standard_NC6s_v3",
            "node_count": 1,
            "gpus_per_node": 1,
            "tensor_parallel_size": 1,
            "pipeline_parallel_size": 1,
            "dtype": "float16",
            "runtime": "transformers",
            "observed_generation": generation,
        }
    )
    return made.model_copy(update={"digest": made.content_digest()}).to_wire()


def workspace(
    *,
    generation: int = 1,
    version: str = "10",
    conditions: list[dict[str, Any]] | None = None,
    deleting: bool = False,
    seed_name: str = "tuning",
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
    made = plan(generation)
    ready = {
        "type": "ResourceReady",
        "status": "True",
        "reason": "NodesReady",
        "message": "nodes ready",
        "observedGeneration": generation,
        "lastTransitionTime": WHEN,
    }
    doc["status"] = {
        "plan": made,
        "workerNodes": ["node-a"],
        "workerNodesPlanDigest": made["digest"],
        "conditions": [ready, *(conditions or [])],
    }
    return doc


def view_of(*objects: tuple[Kind, dict[str, Any]]) -> View:
    view = View(FOLLOWS["tuner"])
    for kind, obj in objects:
        view.apply(ObjectKey.of(kind, obj), trim(kind, obj))
    return view


def tuner(view: View, kube: RecordingKube) -> Tuner:
    return Tuner(settings=TunerSettings(), kube=kube, view=view, catalog=CATALOG)


def requests(kube: RecordingKube) -> list[tuple[str, str]]:
    return [(c.method, c.path) for c in kube.calls]


def written(call: Call) -> list[dict[str, Any]]:
    """The tuner's conditions as written (what the view's Workspace then carries)."""
    return [
        {**c, "lastTransitionTime": WHEN}
        for c in call.body["status"]["conditions"]
        if c["type"] in {"JobStarted", "WorkspaceSucceeded"}
    ]


def by_type(conditions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in conditions}


def pod(job: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{NAME}-x1",
            "namespace": NS,
            "uid": "p-uid",
            "labels": {"kaito.sh/workspace": NAME},
            "ownerReferences": [{"kind": "Job", "uid": job["metadata"]["uid"]}],
        },
        "spec": {"nodeName": "node-a"},
        "status": status,
    }


async def first_run() -> tuple[RecordingKube, dict[str, Any], list[dict[str, Any]]]:
    """A reconcile with the nodes ready: the kube, the Job it made, the conditions it wrote."""
    kube = RecordingKube()  # no read allowed
    await tuner(view_of(("Workspace", workspace())), kube).reconcile(KEY)
    (job,) = kube.writes_to(JOB, "PATCH")
    stored = copy.deepcopy(job.body)
    stored["metadata"] |= {"uid": "j-uid", "generation": 1, "resourceVersion": "20"}
    stored["status"] = {"active": 1}
    (status,) = kube.writes_to(STATUS, "PATCH")
    return kube, stored, written(status)


async def running() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """The Job, its Running pod, and the conditions the tuner writes for them."""
    _, job, first = await first_run()
    running_pod = pod(job, phase="Running")
    kube = RecordingKube()
    view = view_of(
        ("Workspace", workspace(version="11", conditions=first)),
        ("Job", job),
        ("Pod", running_pod),
    )
    await tuner(view, kube).reconcile(KEY)
    (status,) = kube.writes
    return job, running_pod, written(status)


async def test_nodes_ready_applies_the_config_and_the_job_and_reports() -> None:
    kube, job, conditions = await first_run()
    # No Occupant in the view: no name is someone else's, and nothing is read.
    assert requests(kube) == [("PATCH", CONFIG), ("PATCH", JOB), ("PATCH", STATUS)]
    annotations = job["metadata"]["annotations"]
    assert len(annotations[APPLIED_DIGEST_ANNOTATION]) == 16
    assert tuning_manifests.SPEC_ANNOTATION in annotations
    reported = by_type(conditions)
    assert (reported["JobStarted"]["reason"], reported["JobStarted"]["observedGeneration"]) == (
        "workspacePending",
        1,
    )
    assert reported["WorkspaceSucceeded"]["status"] == "False"


async def test_a_running_pod_starts_the_job_and_then_nothing_is_written() -> None:
    job, running_pod, conditions = await running()
    assert by_type(conditions)["JobStarted"]["status"] == "True"
    assert "running on node-a" in by_type(conditions)["JobStarted"]["message"]
    view = view_of(
        ("Workspace", workspace(version="12", conditions=conditions)),
        ("Job", job),
        ("Pod", running_pod),
    )
    kube = RecordingKube()  # no read allowed; a fresh process: all from the view
    await tuner(view, kube).reconcile(KEY)
    assert kube.calls == []


async def test_before_the_view_shows_its_own_writes_nothing_is_written_twice() -> None:
    kube = RecordingKube(allow_reads=True)
    service = tuner(view_of(("Workspace", workspace())), kube)
    await service.reconcile(KEY)
    done = len(kube.calls)
    assert await service.reconcile(KEY) is not None  # looks again in case the view never does
    assert kube.calls[done:] == []


async def test_a_generation_bump_with_the_same_plan_rewrites_only_the_conditions() -> None:
    job, running_pod, conditions = await running()
    view = view_of(
        ("Workspace", workspace(generation=2, version="13", conditions=conditions)),
        ("Job", job),
        ("Pod", running_pod),
    )
    kube = RecordingKube()
    await tuner(view, kube).reconcile(KEY)
    assert requests(kube) == [("PATCH", STATUS)]
    (status,) = kube.writes
    again = by_type(written(status))
    assert {c["observedGeneration"] for c in again.values()} == {2}
    assert again["JobStarted"]["reason"] == by_type(conditions)["JobStarted"]["reason"]


async def test_a_stuck_pod_is_the_job_started_reason() -> None:
    job, _, conditions = await running()
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": "no such host"}}
    stuck = pod(job, phase="Pending", containerStatuses=[{"name": "tuning", "state": waiting}])
    view = view_of(
        ("Workspace", workspace(version="12", conditions=conditions)),
        ("Job", job),
        ("Pod", stuck),
    )
    kube = RecordingKube()
    await tuner(view, kube).reconcile(KEY)
    (status,) = kube.writes
    started = by_type(written(status))["JobStarted"]
    assert (started["status"], started["reason"]) == ("False", "ImagePullError")
    assert "no such host" in started["message"]


async def test_a_job_without_pods_has_its_failed_create_events_read() -> None:
    _, job, conditions = await first_run()
    view = view_of(("Workspace", workspace(version="11", conditions=conditions)), ("Job", job))
    kube = RecordingKube(allow_reads=True)
    events = resources.EVENTS.path(namespace=NS)
    kube.answers[events] = {
        "items": [{"reason": "FailedCreate", "message": 'violates PodSecurity "restricted"'}]
    }
    await tuner(view, kube).reconcile(KEY)
    assert requests(kube) == [("GET", events), ("PATCH", STATUS)]
    started = by_type(written(kube.writes[0]))["JobStarted"]
    assert (started["reason"], started["message"]) == (
        "FailedCreate",
        'violates PodSecurity "restricted"',
    )


async def test_a_changed_job_template_replaces_the_job() -> None:
    job, running_pod, conditions = await running()
    doc = workspace(generation=2, version="13", conditions=conditions)
    doc["tuning"]["input"]["urls"] = ["https://example.com/other.parquet"]
    view = view_of(("Workspace", doc), ("Job", job), ("Pod", running_pod))
    kube = RecordingKube()
    service = tuner(view, kube)
    await service.reconcile(KEY)
    deletes = [(c.path, c.body) for c in kube.writes if c.method == "DELETE"]
    body = {"propagationPolicy": "Foreground", "preconditions": {"uid": "j-uid"}}
    assert deletes == [(JOB, body)]
    assert kube.writes_to(JOB, "PATCH") == []  # made again once its deletion reaches the view
    view.apply(ObjectKey("Job", NS, NAME), None)
    view.apply(ObjectKey("Pod", NS, f"{NAME}-x1"), None)
    kube.allow_reads = True
    await service.reconcile(KEY)
    (made,) = kube.writes_to(JOB, "PATCH")
    assert "other.parquet" in str(made.body["spec"])


async def test_a_user_config_is_read_once_per_generation() -> None:
    doc = workspace()
    doc["tuning"]["config"] = "mine"
    user_config = resources.CONFIGMAPS.path(namespace=NS, name="mine")
    kube = RecordingKube(allow_reads=True)
    kube.answers[user_config] = {
        "data": {
            "training_config.yaml": "training_config:\n  QuantizationConfig:\n"
            "    load_in_4bit: true\n"
        }
    }
    service = tuner(view_of(("Workspace", doc)), kube)
    await service.reconcile(KEY)
    await service.reconcile(KEY)
    assert requests(kube).count(("GET", user_config)) == 1
    assert ("GET", CONFIG) not in requests(kube)  # the user's config: none generated


async def test_a_deleting_workspace_has_its_job_deleted_with_a_uid_precondition() -> None:
    job, running_pod, conditions = await running()
    view = view_of(
        ("Workspace", workspace(version="12", conditions=conditions, deleting=True)),
        ("Job", job),
        ("Pod", running_pod),
    )
    kube = RecordingKube(allow_reads=True)
    live = resources.WORKSPACES.path(namespace=NS, name=NAME)
    kube.answers[live] = workspace(deleting=True)
    service = tuner(view, kube)
    await service.reconcile(KEY)
    body = {"propagationPolicy": "Background", "preconditions": {"uid": "j-uid"}}
    assert [(c.method, c.path, c.body) for c in kube.calls] == [
        ("GET", live, None),  # the apiserver confirms it is going
        ("DELETE", JOB, body),
    ]
    await service.reconcile(KEY)  # the view does not show the deletion yet: not sent twice
    assert len(kube.calls) == 2


async def test_a_deletion_only_the_view_reports_stops_no_job() -> None:
    job, running_pod, conditions = await running()
    view = view_of(
        ("Workspace", workspace(version="12", conditions=conditions, deleting=True)),
        ("Job", job),
        ("Pod", running_pod),
    )
    kube = RecordingKube(allow_reads=True)
    kube.answers[resources.WORKSPACES.path(namespace=NS, name=NAME)] = workspace()
    await tuner(view, kube).reconcile(KEY)
    assert kube.writes == []


async def test_an_inference_workspace_is_not_the_tuners() -> None:
    kube = RecordingKube()
    await tuner(view_of(("Workspace", workspace(seed_name="inference"))), kube).reconcile(KEY)
    assert kube.calls == []
