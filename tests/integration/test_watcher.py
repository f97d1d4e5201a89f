"""The watcher against the real cluster and nats-server: events, resync, summary, rollout trace."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kairyu_core.api import ConditionStatus
from kairyu_core.bus import Bus
from kairyu_core.events import Event, ObjectChanged, WorkspaceDeleted, WorkspaceObserved
from kairyu_core.informing import Informer
from kairyu_core.kube import KubeClient, apply_condition, resources
from kairyu_core.localenv import LocalCluster
from kairyu_core.localenv.binaries import repo_root
from kairyu_core.testing.bus import Inbox
from kairyu_core.testing.manifests import seed_path
from kairyu_core.view import View
from kairyu_watcher import rollout_trace
from kairyu_watcher.app import Watcher
from kairyu_watcher.settings import WatcherSettings

SEED = seed_path("inference")
NAME = "workspace-phi-3-mini"


class Running:
    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.task = asyncio.create_task(watcher.run())

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def inbox(bus: Bus) -> AsyncIterator[Inbox]:
    box = Inbox(bus)
    yield box
    await box.close()


@pytest.fixture
async def start_watcher(
    bus: Bus, kube: KubeClient, namespace: str
) -> AsyncIterator[Callable[[], Running]]:
    started: list[Running] = []

    def start() -> Running:
        settings = WatcherSettings(namespace=namespace, resync_interval_s=3600)
        running = Running(Watcher(settings=settings, bus=bus, kube=kube))
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()


def observed(generation: int) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, WorkspaceObserved) and e.workspace.generation == generation


def set_preset(cluster: LocalCluster, namespace: str, preset: str) -> None:
    patch = json.dumps({"inference": {"preset": {"name": preset}}})
    cluster.kubectl("patch", "workspace", NAME, "-n", namespace, "--type=merge", "-p", patch)


def live(cluster: LocalCluster, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "workspace", NAME, "-n", namespace, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


async def test_apply_edit_delete_are_published_and_the_summary_is_written(
    cluster: LocalCluster, namespace: str, inbox: Inbox, start_watcher: Callable[[], Running]
) -> None:
    start_watcher()
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
    first = await inbox.wait_for(observed(1))
    assert (first.workspace.namespace, first.workspace.name) == (namespace, NAME)

    async def summary_written() -> dict[str, Any]:
        while True:
            ws = live(cluster, namespace)
            if (ws.get("status") or {}).get("state"):
                return ws
            await asyncio.sleep(0.2)

    ws = await asyncio.wait_for(summary_written(), 20)
    ready = {c["type"]: c for c in ws["status"]["conditions"]}["WorkspaceReady"]
    assert (ready["status"], ready["reason"], ws["status"]["state"]) == (
        "False",
        "Pending",
        "Pending",
    )
    assert rollout_trace.stored_generation(ws["metadata"]["annotations"]) == 1

    set_preset(cluster, namespace, "phi-3-mini-128k-instruct")
    await inbox.wait_for(observed(2))
    cluster.kubectl("delete", "workspace", NAME, "-n", namespace)
    gone = await inbox.wait_for(lambda e: isinstance(e, WorkspaceDeleted))
    assert gone.workspace.uid == first.workspace.uid


async def test_an_edit_made_while_the_watcher_is_down_is_delivered_when_it_returns(
    cluster: LocalCluster, namespace: str, inbox: Inbox, start_watcher: Callable[[], Running]
) -> None:
    watcher = start_watcher()
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
    await inbox.wait_for(observed(1))
    await watcher.stop()
    set_preset(cluster, namespace, "phi-4")
    start_watcher()
    edit = await inbox.wait_for(observed(2))
    assert edit.workspace.uid == live(cluster, namespace)["metadata"]["uid"]


async def test_the_summary_turns_ready_when_every_service_reports_ready(
    cluster: LocalCluster,
    kube: KubeClient,
    namespace: str,
    inbox: Inbox,
    start_watcher: Callable[[], Running],
) -> None:
    start_watcher()
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
    await inbox.wait_for(observed(1))
    owners = {"Planned": "planner", "ResourceReady": "provisioner", "InferenceReady": "deployer"}
    for kind, owner in owners.items():
        await apply_condition(
            kube,
            namespace=namespace,
            name=NAME,
            field_manager=f"kairyu-{owner}",
            type=kind,
            status=ConditionStatus.TRUE,
            reason=kind,
        )

    async def ready() -> list[str]:
        while True:
            row = cluster.kubectl(
                "get", "workspaces.v1alpha1.kaito.sh", NAME, "-n", namespace, "--no-headers"
            ).stdout.split()
            if row[4] == "True":
                return row
            await asyncio.sleep(0.2)

    row = await asyncio.wait_for(ready(), 20)
    assert row[2:5] == ["True", "True", "True"], "RESOURCEREADY, INFERENCEREADY, WORKSPACEREADY"
    assert live(cluster, namespace)["status"]["state"] == "Ready"


async def test_labelled_objects_are_published_as_object_changed(
    cluster: LocalCluster, namespace: str, inbox: Inbox, start_watcher: Callable[[], Running]
) -> None:
    start_watcher()
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
    await inbox.wait_for(observed(1))
    cluster.kubectl("create", "configmap", "unlabelled", "-n", namespace)
    labels = {"kaito.sh/workspace": NAME}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "inference-0", "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "model", "image": "example.invalid/model:1"}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    change = await inbox.wait_for(lambda e: isinstance(e, ObjectChanged))
    assert isinstance(change, ObjectChanged)
    assert (change.kind, change.object_name, change.change) == ("Pod", "inference-0", "ADDED")
    assert change.workspace.name == NAME


def grant_the_charts_namespaced_rights(cluster: LocalCluster, namespace: str) -> str:
    """The watcher's rights as the chart grants them with watchNamespace; its account's name."""
    values = yaml.safe_load((repo_root() / "charts/kairyu/charts/watcher/values.yaml").read_text())
    account = f"system:serviceaccount:{namespace}:watcher"
    subjects = [{"kind": "User", "name": account, "apiGroup": "rbac.authorization.k8s.io"}]
    rbac = "rbac.authorization.k8s.io/v1"
    meta = {"name": f"{namespace}-watcher"}
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "name": meta["name"]}
    for doc in (
        {
            "kind": "Role",
            "metadata": {**meta, "namespace": namespace},
            "rules": values["rbac"]["rules"],
        },
        {
            "kind": "RoleBinding",
            "metadata": {**meta, "namespace": namespace},
            "roleRef": {**role_ref, "kind": "Role"},
            "subjects": subjects,
        },
        {"kind": "ClusterRole", "metadata": meta, "rules": values["rbac"].get("clusterRules", [])},
        {
            "kind": "ClusterRoleBinding",
            "metadata": meta,
            "roleRef": {**role_ref, "kind": "ClusterRole"},
            "subjects": subjects,
        },
    ):
        cluster.apply({"apiVersion": rbac, **doc})
    return account


async def test_a_watcher_with_namespace_rights_only_watches_its_namespace(
    cluster: LocalCluster, bus: Bus, namespace: str, inbox: Inbox
) -> None:
    account = grant_the_charts_namespaced_rights(cluster, namespace)
    kube = await KubeClient.connect(Path(cluster.kubeconfig))
    kube.api.set_default_header("Impersonate-User", account)
    settings = WatcherSettings(namespace=namespace, resync_interval_s=3600)
    running = Running(Watcher(settings=settings, bus=bus, kube=kube))
    try:
        cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
        await inbox.wait_for(observed(1))
        cluster.kubectl("apply", "-f", "-", input=json.dumps(labelled_pod(namespace)))
        change = await inbox.wait_for(lambda e: isinstance(e, ObjectChanged))
        assert isinstance(change, ObjectChanged)
        assert (change.kind, change.object_name) == ("Pod", "inference-0")
    finally:
        await running.stop()
        await kube.close()
        cluster.kubectl(
            "delete", "clusterrole,clusterrolebinding", f"{namespace}-watcher", check=False
        )


def labelled_pod(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "inference-0",
            "namespace": namespace,
            "labels": {"kaito.sh/workspace": NAME},
        },
        "spec": {"containers": [{"name": "model", "image": "example.invalid/model:1"}]},
    }


async def test_events_of_a_generation_join_its_rollout_trace(
    cluster: LocalCluster,
    namespace: str,
    inbox: Inbox,
    start_watcher: Callable[[], Running],
    spans: InMemorySpanExporter,
) -> None:
    start_watcher()
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
    await inbox.wait_for(observed(1))
    await asyncio.sleep(0.5)
    annotation = live(cluster, namespace)["metadata"]["annotations"][rollout_trace.ANNOTATION]
    trace_id = annotation.split(";")[1].split("-")[1]
    roots = [s for s in spans.get_finished_spans() if s.name == f"rollout {namespace}/{NAME}"]
    assert [f"{s.context.trace_id:032x}" for s in roots] == [trace_id]
    finished = spans.get_finished_spans()
    consumed = [s for s in finished if s.name.endswith(" process") and ".observed." in s.name]
    assert consumed
    assert {f"{s.context.trace_id:032x}" for s in consumed} == {trace_id}


async def test_resync_publishes_every_workspace_again(
    cluster: LocalCluster, kube: KubeClient, bus: Bus, namespace: str, inbox: Inbox
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
    watcher = Watcher(settings=WatcherSettings(namespace=namespace), bus=bus, kube=kube)
    await watcher.resync()  # no watch running: only the resync can have published it
    event = await inbox.wait_for(observed(1))
    assert event.workspace.name == NAME
    stored = await kube.get(resources.WORKSPACES, NAME, namespace=namespace)
    assert stored["metadata"]["uid"] == event.workspace.uid


async def test_only_changes_a_service_acts_on_wake_the_services(
    cluster: LocalCluster,
    kube: KubeClient,
    namespace: str,
    inbox: Inbox,
    start_watcher: Callable[[], Running],
) -> None:
    start_watcher()
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
    await inbox.wait_for(observed(1))

    async def says(owner: str, kind: str, status: ConditionStatus, message: str = "") -> str:
        written = await apply_condition(
            kube,
            namespace=namespace,
            name=NAME,
            field_manager=f"kairyu-{owner}",
            type=kind,
            status=status,
            reason="Provisioning" if status == ConditionStatus.UNKNOWN else kind,
            message=message,
        )
        return str(written["metadata"]["resourceVersion"])

    def published() -> set[str]:
        return {
            e.workspace.resource_version for e in inbox.events if isinstance(e, WorkspaceObserved)
        }

    planned = await says("planner", "Planned", ConditionStatus.TRUE)
    await inbox.wait_for(lambda e: planned in published())
    waiting = await says("provisioner", "ResourceReady", ConditionStatus.UNKNOWN, "0 of 1 ready")
    await inbox.wait_for(lambda e: waiting in published())
    progress = await says("provisioner", "ResourceReady", ConditionStatus.UNKNOWN, "0 of 1 (a)")
    summary = await asyncio.wait_for(_summary_written(kube, namespace, "0 of 1 (a)"), 20)
    decided = await says("provisioner", "ResourceReady", ConditionStatus.TRUE, "1 ready")
    await inbox.wait_for(lambda e: decided in published())
    # Events come in the order the watcher saw the versions: the skipped ones are not coming.
    assert progress not in published(), "a progress message alone woke every service"
    assert summary not in published(), "the watcher's own summary woke every service"


async def _summary_written(kube: KubeClient, namespace: str, says: str) -> str:
    """The resourceVersion of the watcher's summary once it mentions `says`."""
    while True:
        ws = await kube.get(resources.WORKSPACES, NAME, namespace=namespace)
        ready = {c["type"]: c for c in ws["status"]["conditions"]}.get("WorkspaceReady", {})
        if says in ready.get("message", ""):
            return str(ws["metadata"]["resourceVersion"])
        await asyncio.sleep(0.1)


def _labelled_pod(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "worker",
            "namespace": namespace,
            "labels": {"kaito.sh/workspace": NAME},
        },
        # Bound to no node that exists: nothing runs it, and it never changes by itself.
        "spec": {"nodeName": "no-such-node", "containers": [{"name": "c", "image": "none"}]},
    }


async def test_object_states_are_kept_on_nats_and_a_restart_publishes_only_what_changed(
    cluster: LocalCluster,
    bus: Bus,
    namespace: str,
    start_watcher: Callable[[], Running],
    tmp_path: Path,
) -> None:
    """What services build their views from; a restarted watcher re-sends nothing unchanged."""
    view = View(["Workspace", "Pod"])
    informer = Informer(bus, view, lambda keys: None)
    following = asyncio.create_task(informer.run())
    try:
        watcher = start_watcher()
        cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
        pod_file = tmp_path / "pod.yaml"
        pod_file.write_text(yaml.safe_dump(_labelled_pod(namespace)))
        cluster.kubectl("apply", "-f", str(pod_file))
        key = f"{namespace}/{NAME}"

        def summarized() -> bool:
            ws = view.workspace(key)
            return bool(ws and (ws.get("status") or {}).get("state"))

        await _wait(lambda: summarized() and len(view.owned("Pod", key)) == 1)
        stored = view.owned("Pod", key)[0]
        assert stored["spec"] == {"nodeName": "no-such-node"}  # trimmed: no containers
        assert "managedFields" not in stored["metadata"]
        await asyncio.sleep(1.0)  # let the watcher's last writes land before it stops
        await watcher.stop()
        before = (await bus.js.stream_info(bus.stream.state_stream)).state.last_seq

        cluster.kubectl("delete", "pod", "worker", "-n", namespace, "--grace-period=0", "--force")
        start_watcher()
        await _wait(lambda: not view.owned("Pod", key))  # tombstoned: deleted while away
        await asyncio.sleep(2.0)
        after = (await bus.js.stream_info(bus.stream.state_stream)).state.last_seq
        assert after - before == 1, "only the tombstone: nothing unchanged was sent again"
        assert view.workspace(key) is not None
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)


async def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)
