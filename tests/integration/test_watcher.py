"""The watcher against the real cluster and nats-server: states on NATS, summary, rollout trace."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kairyu_contracts.api import ConditionStatus
from kairyu_core.bus import Bus, StateBus
from kairyu_core.informing import Informer
from kairyu_core.kube import KubeClient, apply_condition
from kairyu_core.view import View
from kairyu_localenv import LocalCluster
from kairyu_localenv.binaries import repo_root
from kairyu_testing.seeds import seed_path
from kairyu_watcher.app import Watcher
from kairyu_watcher.settings import SlowPhaseSettings, WatcherSettings

SEED = seed_path("inference")
NAME = "workspace-phi-3-mini"


class Running:
    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.task = asyncio.create_task(watcher.run())

    async def stop(self) -> None:
        crashed = self.task.done() and not self.task.cancelled() and self.task.exception()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        if crashed:  # a watcher that died on its own must fail the test, not hide in the task
            raise crashed


class Followed:
    """What a service would see: a view of the watcher's states, and the keys each change woke."""

    def __init__(self, bus: StateBus) -> None:
        self.view = View(["Workspace", "Pod", "Occupant"])
        self.woken: list[str] = []
        self._task = asyncio.create_task(Informer(bus, self.view, self.woken.extend).run())

    def workspace(self) -> dict[str, Any] | None:
        return next(iter(self.view.all("Workspace")), None)

    def generation(self) -> int | None:
        ws = self.workspace()
        return ws["metadata"].get("generation") if ws else None

    async def until(self, predicate: Callable[[], object], timeout: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def followed(bus: Bus) -> AsyncIterator[Followed]:
    following = Followed(bus)
    yield following
    await following.close()


@pytest.fixture
async def start_watcher(
    bus: Bus, kube: KubeClient, namespace: str
) -> AsyncIterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(**overrides: Any) -> Running:
        settings = WatcherSettings(namespace=namespace, resync_interval_s=3600, **overrides)
        running = Running(Watcher(settings=settings, bus=bus, kube=kube))
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()


def set_preset(cluster: LocalCluster, namespace: str, preset: str) -> None:
    patch = json.dumps({"inference": {"preset": {"name": preset}}})
    cluster.kubectl("patch", "workspace", NAME, "-n", namespace, "--type=merge", "-p", patch)


def live(cluster: LocalCluster, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "workspace", NAME, "-n", namespace, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


async def planned_without_summary(kube: KubeClient, namespace: str, name: str = NAME) -> None:
    """`Planned=True` as a planner reports it, but without the summary it leads to."""
    await apply_condition(
        kube,
        namespace=namespace,
        name=name,
        field_manager="kairyu-planner",
        type="Planned",
        status=ConditionStatus.TRUE,
        reason="PlanCreated",
    )


async def test_apply_edit_delete_are_kept_on_nats_and_a_stale_summary_is_put_right(
    cluster: LocalCluster,
    kube: KubeClient,
    namespace: str,
    followed: Followed,
    start_watcher: Callable[[], Running],
) -> None:
    start_watcher()
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
    await followed.until(lambda: followed.generation() == 1)
    stored = followed.workspace()
    assert stored is not None
    assert (stored["metadata"]["namespace"], stored["metadata"]["name"]) == (namespace, NAME)
    assert "managedFields" not in stored["metadata"]
    # A service's condition without the summary it leads to (an older planner, or one whose
    # write raced another's): the watcher writes the summary the conditions say.
    await planned_without_summary(kube, namespace)

    async def summary_written() -> dict[str, Any]:
        while True:
            ws = live(cluster, namespace)
            if (ws.get("status") or {}).get("state"):
                return ws
            await asyncio.sleep(0.2)

    ws = await asyncio.wait_for(summary_written(), 20)
    ready = {c["type"]: c for c in ws["status"]["conditions"]}["WorkspaceReady"]
    assert (ready["status"], ready["reason"], ready["message"], ws["status"]["state"]) == (
        "False",
        "Pending",
        "waiting for ResourceReady",
        "Pending",
    )

    set_preset(cluster, namespace, "phi-3-mini-128k-instruct")
    await followed.until(lambda: followed.generation() == 2)
    cluster.kubectl("delete", "workspace", NAME, "-n", namespace)
    await followed.until(lambda: followed.workspace() is None)
    assert f"{namespace}/{NAME}" in followed.woken


async def test_an_edit_made_while_the_watcher_is_down_is_stored_when_it_returns(
    cluster: LocalCluster,
    namespace: str,
    followed: Followed,
    start_watcher: Callable[[], Running],
) -> None:
    watcher = start_watcher()
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
    await followed.until(lambda: followed.generation() == 1)
    await watcher.stop()
    set_preset(cluster, namespace, "phi-4")
    start_watcher()
    await followed.until(lambda: followed.generation() == 2)
    stored = followed.workspace()
    assert stored is not None
    assert stored["metadata"]["uid"] == live(cluster, namespace)["metadata"]["uid"]


async def test_the_summary_turns_ready_when_every_service_reports_ready(
    cluster: LocalCluster,
    kube: KubeClient,
    namespace: str,
    followed: Followed,
    start_watcher: Callable[[], Running],
) -> None:
    start_watcher()
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
    await followed.until(lambda: followed.generation() == 1)
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


async def test_labelled_pods_are_kept_on_nats_under_their_workspace(
    cluster: LocalCluster, namespace: str, followed: Followed, start_watcher: Callable[[], Running]
) -> None:
    start_watcher()
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
    await followed.until(lambda: followed.generation() == 1)
    unlabelled = labelled_pod(namespace)
    unlabelled["metadata"].update(name="stranger", labels={})
    cluster.kubectl("apply", "-f", "-", input=json.dumps(unlabelled))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(labelled_pod(namespace)))
    key = f"{namespace}/{NAME}"
    await followed.until(lambda: followed.view.owned("Pod", key))
    assert [p["metadata"]["name"] for p in followed.view.owned("Pod", key)] == ["inference-0"]
    assert [p["metadata"]["name"] for p in followed.view.all("Pod")] == ["inference-0"]


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
    cluster: LocalCluster, bus: Bus, namespace: str, followed: Followed
) -> None:
    account = grant_the_charts_namespaced_rights(cluster, namespace)
    try:
        # The client is closed even when stopping the watcher raises: a connection left to the
        # garbage collector fails whichever later test it is collected in.
        async with await KubeClient.connect(Path(cluster.kubeconfig)) as kube:
            kube.api.set_default_header("Impersonate-User", account)
            settings = WatcherSettings(namespace=namespace, resync_interval_s=3600)
            running = Running(Watcher(settings=settings, bus=bus, kube=kube))
            try:
                cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
                await followed.until(lambda: followed.generation() == 1)
                cluster.kubectl("apply", "-f", "-", input=json.dumps(labelled_pod(namespace)))
                await followed.until(lambda: followed.view.owned("Pod", f"{namespace}/{NAME}"))
            finally:
                await running.stop()
    finally:
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


async def test_only_changes_a_service_acts_on_wake_the_services(
    cluster: LocalCluster,
    kube: KubeClient,
    namespace: str,
    followed: Followed,
    start_watcher: Callable[[], Running],
) -> None:
    start_watcher()
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
    await followed.until(lambda: followed.generation() == 1)

    async def says(owner: str, kind: str, status: ConditionStatus, message: str = "") -> None:
        await apply_condition(
            kube,
            namespace=namespace,
            name=NAME,
            field_manager=f"kairyu-{owner}",
            type=kind,
            status=status,
            reason="Provisioning" if status == ConditionStatus.UNKNOWN else kind,
            message=message,
        )

    def message_of(kind: str) -> str | None:
        ws = followed.workspace() or {}
        for c in (ws.get("status") or {}).get("conditions") or []:
            if c.get("type") == kind:
                return str(c.get("message"))
        return None

    await says("planner", "Planned", ConditionStatus.TRUE)
    await followed.until(lambda: message_of("Planned") is not None)
    await says("provisioner", "ResourceReady", ConditionStatus.UNKNOWN, "0 of 1 ready")
    await followed.until(lambda: message_of("ResourceReady") == "0 of 1 ready")
    await asyncio.sleep(1.0)  # the watcher's summary of it lands too
    woken = len(followed.woken)
    await says("provisioner", "ResourceReady", ConditionStatus.UNKNOWN, "0 of 1 (a)")
    await followed.until(lambda: "0 of 1 (a)" in (message_of("WorkspaceReady") or ""))
    # Both are in the view (a service compares its writes with it), and neither woke anyone.
    assert message_of("ResourceReady") == "0 of 1 (a)"
    assert len(followed.woken) == woken, "a progress message or the summary woke the services"
    await says("provisioner", "ResourceReady", ConditionStatus.TRUE, "1 ready")
    await followed.until(lambda: len(followed.woken) > woken)


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
    *,
    cluster: LocalCluster,
    bus: Bus,
    kube: KubeClient,
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
        await _wait(lambda: view.workspace(key) is not None)
        await planned_without_summary(kube, namespace)  # a report the watcher summarises

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


async def test_a_name_held_by_someone_else_is_an_occupant_until_it_is_freed(
    cluster: LocalCluster,
    namespace: str,
    followed: Followed,
    start_watcher: Callable[[], Running],
) -> None:
    """A user's ConfigMap named as the Workspace's would be: the deployer learns it from the
    Occupant, without a GET. Freed while the watcher is down, it is tombstoned on its return."""
    config = f"{NAME}-inference-config"
    cluster.kubectl("create", "configmap", config, "-n", namespace, "--from-literal=a=b")
    watcher = start_watcher()
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
    key = f"{namespace}/{NAME}"
    await followed.until(lambda: followed.view.owned("Occupant", key))
    (held,) = followed.view.owned("Occupant", key)
    user_uid = cluster.kubectl(
        "get", "configmap", config, "-n", namespace, "-o", "jsonpath={.metadata.uid}"
    ).stdout
    assert held["spec"] == {
        "kind": "ConfigMap",
        "name": config,
        "uid": user_uid,
        "controller": None,
    }
    await watcher.stop()
    cluster.kubectl("delete", "configmap", config, "-n", namespace)
    woken = len(followed.woken)
    start_watcher()
    await followed.until(lambda: not followed.view.owned("Occupant", key))
    assert key in followed.woken[woken:]  # the tombstone wakes the Workspace


def slow_phase_events(cluster: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "events", "-n", namespace, "-o", "json",
        "--field-selector", f"reason=SlowPhase,involvedObject.name={name}",
    ).stdout  # fmt: skip
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


async def first_slow_phase_events(
    cluster: LocalCluster, namespace: str, name: str
) -> list[dict[str, Any]]:
    """The SlowPhase Events on `name`, once there is one (kubectl each 0.3 s, 30 s at most)."""
    for _ in range(100):
        if found := slow_phase_events(cluster, namespace, name):
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"no SlowPhase Event on {name}")


async def test_a_phase_that_runs_long_gets_one_event_that_says_why(
    cluster: LocalCluster,
    kube: KubeClient,
    namespace: str,
    followed: Followed,
    start_watcher: Callable[..., Running],
) -> None:
    slow = SlowPhaseSettings(provision_s=1, check_every_s=0.2)
    first = start_watcher(slow_phases=slow)
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
    await followed.until(lambda: followed.generation() == 1)
    # Planned, and no provisioner runs: the provision phase never ends.
    await planned_without_summary(kube, namespace)
    [event] = await first_slow_phase_events(cluster, namespace, NAME)
    assert event["type"] == "Warning"
    assert event["involvedObject"]["uid"] == live(cluster, namespace)["metadata"]["uid"]
    message = event["message"]
    assert message.startswith("provision (generation 1) has run "), message
    assert "longer than 1s; waiting for: the provisioner has not asked for nodes yet" in message
    assert "; next: the provisioner waits for the nodes to be Ready" in message
    assert "usually: no finished provision phase in this cluster to compare with" in message

    # A restarted watcher does not say it again: it tells a second slow Workspace, and by then
    # it has looked at the first (followed in the order they came) and found its Event.
    await first.stop()
    start_watcher(slow_phases=slow)
    second = yaml.safe_load(SEED.read_text())
    second["metadata"]["name"] = "second"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(second))
    await followed.until(lambda: len(list(followed.view.all("Workspace"))) == 2)
    await planned_without_summary(kube, namespace, "second")
    await first_slow_phase_events(cluster, namespace, "second")
    assert len(slow_phase_events(cluster, namespace, NAME)) == 1
