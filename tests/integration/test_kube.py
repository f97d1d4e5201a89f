"""kairyu_core.kube on a real apiserver: watches that survive breakage; conditions per manager."""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kairyu_contracts.api import ConditionStatus
from kairyu_core.kube import KubeClient, WatchEvent, apply_condition, resources, watch
from kairyu_core.settings import KubeTimeouts
from kairyu_localenv import LocalCluster
from kairyu_testing.proxy import SilentProxy
from kairyu_testing.seeds import seed

SEED = seed("inference")
NAME = SEED["metadata"]["name"]


class Recorder:
    """Runs a watch in the background and keeps what it yields."""

    def __init__(self, client: KubeClient, namespace: str, **kwargs: Any) -> None:
        self.events: list[WatchEvent] = []
        self._task = asyncio.create_task(self._run(client, namespace, kwargs))

    async def _run(self, client: KubeClient, namespace: str, kwargs: dict[str, Any]) -> None:
        async for event in watch(client, resources.WORKSPACES, namespace=namespace, **kwargs):
            self.events.append(event)

    async def until_latest(self, predicate: Any, timeout: float = 45.0) -> WatchEvent:
        async def wait() -> WatchEvent:
            while not (self.events and predicate(self.events[-1])):
                assert not self._task.done(), self._task.exception()
                await asyncio.sleep(0.1)
            return self.events[-1]

        return await asyncio.wait_for(wait(), timeout)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def recorders() -> AsyncIterator[list[Recorder]]:
    made: list[Recorder] = []
    yield made
    for recorder in made:
        await recorder.stop()


def preset_of(event: WatchEvent) -> str:
    return str(event.object["inference"]["preset"]["name"])


def apply_seed(cluster: LocalCluster, namespace: str, preset: str) -> None:
    doc = json.loads(json.dumps(SEED))
    doc["inference"]["preset"]["name"] = preset
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))


async def watching_then_restarted(
    cluster: LocalCluster, kube: KubeClient, namespace: str, recorders: list[Recorder]
) -> Recorder:
    """A watch that saw the seed Workspace, then an apiserver restart it has not noticed yet."""
    apply_seed(cluster, namespace, "phi-3-mini-4k-instruct")
    recorder = Recorder(kube, namespace)
    recorders.append(recorder)
    await recorder.until_latest(lambda e: e.type == "ADDED")
    # Blocking call: this test's event loop (and so the watch) sees the outage only afterwards.
    cluster.restart_apiserver(down_for=1.0)
    return recorder


async def test_update_made_while_apiserver_is_down_is_delivered_as_latest_state(
    cluster: LocalCluster, kube: KubeClient, namespace: str, recorders: list[Recorder]
) -> None:
    recorder = await watching_then_restarted(cluster, kube, namespace, recorders)
    apply_seed(cluster, namespace, "phi-3-mini-128k-instruct")  # the watch is still reconnecting

    latest = await recorder.until_latest(lambda e: preset_of(e) == "phi-3-mini-128k-instruct")
    assert latest.type in ("MODIFIED", "ADDED")
    live = json.loads(
        cluster.kubectl("get", "workspace", NAME, "-n", namespace, "-o", "json").stdout
    )
    assert latest.object["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]


async def test_resource_version_too_old_relists_to_the_latest_state(
    cluster: LocalCluster, kube: KubeClient, namespace: str, recorders: list[Recorder]
) -> None:
    apply_seed(cluster, namespace, "phi-3-mini-4k-instruct")
    apply_seed(cluster, namespace, "phi-4")
    # Resuming from resourceVersion 1 is far older than the apiserver keeps: it answers 410 Gone.
    recorder = Recorder(kube, namespace, since="1")
    recorders.append(recorder)
    latest = await recorder.until_latest(lambda e: preset_of(e) == "phi-4")
    assert latest.type == "ADDED"
    assert [preset_of(e) for e in recorder.events] == ["phi-4"], (
        "only the latest state, no stale replay"
    )


async def test_deletion_during_a_broken_watch_is_reported(
    cluster: LocalCluster, kube: KubeClient, namespace: str, recorders: list[Recorder]
) -> None:
    recorder = await watching_then_restarted(cluster, kube, namespace, recorders)
    cluster.kubectl("delete", "workspace", NAME, "-n", namespace)
    deleted = await recorder.until_latest(lambda e: e.type == "DELETED")
    assert deleted.object["metadata"]["name"] == NAME


async def test_a_watch_gone_silent_resumes_on_a_new_connection(
    cluster: LocalCluster, namespace: str, recorders: list[Recorder], tmp_path: Path
) -> None:
    # A half-open connection: the apiserver's bytes stop arriving, no error, no end of stream.
    async with SilentProxy("127.0.0.1", int(cluster.server.rsplit(":", 1)[1])) as proxy:
        kubeconfig = proxy.kubeconfig(Path(cluster.kubeconfig), tmp_path / "kubeconfig")
        timeouts = KubeTimeouts(watch_idle_s=2.0)
        async with await KubeClient.connect(kubeconfig, timeouts=timeouts) as kube:
            apply_seed(cluster, namespace, "phi-3-mini-4k-instruct")
            recorder = Recorder(kube, namespace)
            recorders.append(recorder)
            await recorder.until_latest(lambda e: e.type == "ADDED")
            proxy.stall(new_connections=False)  # the open watch goes silent; a new one works
            apply_seed(cluster, namespace, "phi-4")
            latest = await recorder.until_latest(lambda e: preset_of(e) == "phi-4", timeout=15)
            assert latest.type == "MODIFIED"
            await recorder.stop()


async def test_two_field_managers_keep_each_others_conditions(
    cluster: LocalCluster, kube: KubeClient, namespace: str
) -> None:
    apply_seed(cluster, namespace, "phi-3-mini-4k-instruct")

    async def report(
        manager: str, type_: str, status: ConditionStatus, reason: str, message: str = ""
    ) -> None:
        await apply_condition(
            kube,
            namespace=namespace,
            name=NAME,
            field_manager=manager,
            type=type_,
            status=status,
            reason=reason,
            message=message,
        )

    await report(
        "kairyu-planner", "Planned", ConditionStatus.TRUE, "Planned", "1 x Standard_NC6s_v3"
    )
    await report("kairyu-provisioner", "ResourceReady", ConditionStatus.FALSE, "NodesNotReady")
    first = await kube.get(resources.WORKSPACES, NAME, namespace=namespace)
    await report("kairyu-planner", "Planned", ConditionStatus.TRUE, "Planned", "re-planned")
    await report("kairyu-provisioner", "ResourceReady", ConditionStatus.TRUE, "NodesReady")

    live = await kube.get(resources.WORKSPACES, NAME, namespace=namespace)
    by_type = {c["type"]: c for c in live["status"]["conditions"]}
    assert set(by_type) == {"Planned", "ResourceReady"}
    assert by_type["Planned"]["message"] == "re-planned"
    assert by_type["ResourceReady"]["status"] == "True"
    assert by_type["Planned"]["observedGeneration"] == live["metadata"]["generation"]
    before = {c["type"]: c for c in first["status"]["conditions"]}
    assert by_type["Planned"]["lastTransitionTime"] == before["Planned"]["lastTransitionTime"]
    managers = {
        m["manager"] for m in live["metadata"]["managedFields"] if m.get("subresource") == "status"
    }
    assert {"kairyu-planner", "kairyu-provisioner"} <= managers
    row = cluster.kubectl(
        "get", "workspaces.v1alpha1.kaito.sh", NAME, "-n", namespace, "--no-headers"
    ).stdout.split()
    assert row[2] == "True", "RESOURCEREADY column shows the provisioner's condition"


async def test_a_metadata_only_watch_lists_in_pages_and_sees_names_and_owners(
    cluster: LocalCluster, kube: KubeClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ConfigMap of a namespace, two per list request, with its data left at the server;
    then a deletion comes through the watch."""
    from kairyu_core.kube import watching  # noqa: PLC0415 - the page size, for this test only

    monkeypatch.setattr(watching, "_PAGE", 2)
    tokens: list[str | None] = []  # the continue token of each list request (real ones, counted)
    real_list = kube.list

    async def counted_list(*args: Any, **kwargs: Any) -> dict[str, Any]:
        tokens.append(kwargs.get("continue_token"))
        return await real_list(*args, **kwargs)

    monkeypatch.setattr(kube, "list", counted_list)
    names = [f"cm-{i}" for i in range(5)]
    for name in names:
        cluster.kubectl(
            "create", "configmap", name, "-n", namespace, "--from-literal=secretish=value"
        )
    listed, gone = asyncio.Event(), asyncio.Event()
    seen: list[WatchEvent] = []

    async def follow() -> None:
        async for event in watch(
            kube, resources.CONFIGMAPS, namespace=namespace, metadata_only=True, listed=listed
        ):
            seen.append(event)
            if event.type == "DELETED" and event.object["metadata"]["name"] == "cm-3":
                gone.set()

    task = asyncio.create_task(follow())
    try:
        await asyncio.wait_for(listed.wait(), 30)
        listed_names = {e.object["metadata"]["name"] for e in seen if e.type == "ADDED"}
        assert set(names) <= listed_names  # kube-root-ca.crt too
        assert len(tokens) >= 3  # six ConfigMaps, two a page: one snapshot in three pages
        assert tokens[0] is None
        assert all(tokens[1:])
        assert all("data" not in e.object for e in seen)  # names and owners, not the data
        cluster.kubectl("delete", "configmap", "cm-3", "-n", namespace)
        await asyncio.wait_for(gone.wait(), 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_watch_of_an_api_not_served_says_so_instead_of_listing(
    kube: KubeClient, namespace: str
) -> None:
    """A kind whose CRD is not installed (NodeClaims without Karpenter) is `unavailable`, not
    `listed`: a caller that waits for a first list knows it will not come soon."""
    missing = resources.Resource("absent.kairyu.io", "v1", "widgets", "Widget")
    listed, unavailable = asyncio.Event(), asyncio.Event()

    async def follow() -> None:
        async for _ in watch(
            kube, missing, namespace=namespace, listed=listed, unavailable=unavailable
        ):
            pass  # pragma: no cover - nothing is served

    task = asyncio.create_task(follow())
    try:
        await asyncio.wait_for(unavailable.wait(), 30)
        assert not listed.is_set()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
