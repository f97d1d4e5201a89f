"""The provisioner against the real cluster, NATS, real Karpenter and the local ARM endpoint.

Each test runs the watcher, planner and provisioner in this process (the kill test runs the
provisioner as its own process), applies a Workspace, and checks what a user would see: the
conditions, status.workerNodes, the nodes with their labels and taint, and what is left after
deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.mgmt.containerservice.aio import ContainerServiceClient
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kairyu_contracts.api import LabelSelector
from kairyu_contracts.catalog import load_catalog
from kairyu_contracts.objectstate import ObjectKey, trim
from kairyu_core.bus import FOLLOWS, Bus, StreamSpec
from kairyu_core.kube import KubeClient, apply_status, errors, resources
from kairyu_core.reconciling import Reconcile
from kairyu_core.rollout_trace import rollout_context
from kairyu_core.view import View
from kairyu_localenv import GpuNodeSpec, LocalCluster, LocalNats
from kairyu_localenv.fake_arm import FakeArm
from kairyu_localenv.karpenter_kwok import LocalKarpenter
from kairyu_localenv.processes import ManagedProcess
from kairyu_planner.app import Planner, followed
from kairyu_planner.settings import PlannerSettings, PlanningSettings
from kairyu_provisioner import naming
from kairyu_provisioner.app import Provisioner
from kairyu_provisioner.backends import Backend
from kairyu_provisioner.backends.azure import AzureBackend
from kairyu_provisioner.backends.byo import ByoBackend
from kairyu_provisioner.backends.karpenter import KarpenterBackend
from kairyu_provisioner.node_target import NodeTarget
from kairyu_provisioner.settings import (
    AzureSettings,
    KarpenterSettings,
    ProvisionerSettings,
    ProvisioningSettings,
)
from kairyu_testing.seeds import seed
from kairyu_testing.service_processes import service_process
from kairyu_testing.stack import ServiceStack
from kairyu_testing.workspaces import condition, has_reason, is_true, until
from kairyu_watcher.app import Watcher
from kairyu_watcher.settings import WatcherSettings

SUB, RG, AKS = "sub-123", "rg", "aks1"
FAST = ProvisioningSettings(check_interval_s=1.0, readiness_timeout_s=60.0, gone_confirm_s=0.2)


class Stack(ServiceStack):
    """Watcher and planner on the test's stream; the test adds the provisioner it needs."""

    def __init__(
        self,
        bus: Bus,
        kube: KubeClient,
        namespace: str,
        planning: PlanningSettings | None = None,
    ) -> None:
        super().__init__(bus)
        self.kube = kube
        planner_settings = PlannerSettings(planning=planning or PlanningSettings())
        catalog = load_catalog()
        watcher = Watcher(
            settings=WatcherSettings(namespace=namespace, resync_interval_s=3600),
            bus=bus,
            kube=kube,
        )
        self.run(watcher.run())
        self.control(
            service=planner_settings.service_name,
            kinds=followed(planner_settings.planning),
            reconcile=lambda view: (
                Planner(settings=planner_settings, kube=kube, view=view, catalog=catalog).reconcile
            ),
        )

    def add_provisioner(self, settings: ProvisionerSettings, backend: Backend) -> Provisioner:
        """The provisioner with its view and controller, wired as its `__main__` wires it."""
        made: list[Provisioner] = []

        def reconciler(view: View) -> Reconcile:
            made.append(
                Provisioner(
                    settings=settings,
                    kube=self.kube,
                    view=view,
                    catalog=load_catalog(),
                    backend=backend,
                )
            )
            return made[-1].reconcile

        controlled = self.control(
            service=settings.service_name, kinds=FOLLOWS["provisioner"], reconcile=reconciler
        )
        if not backend.has_objects:  # agent pools: scanned for in ARM, as __main__ does
            self.run(made[0].run_orphan_scan(controlled.informer.synced))
        return made[0]


@pytest.fixture
async def stack(bus: Bus, kube: KubeClient, namespace: str) -> AsyncIterator[Stack]:
    running = Stack(bus, kube, namespace)
    yield running
    await running.stop()


@pytest.fixture
async def fake_arm(kube: KubeClient) -> AsyncIterator[tuple[FakeArm, str]]:
    arm = FakeArm(kube, operation_delay_s=0.3)
    url = await arm.start()
    yield arm, url
    await arm.stop()


@contextlib.asynccontextmanager
async def azure_provisioner(
    stack: Stack,
    url: str,
    namespace: str,
    *,
    provisioning: ProvisioningSettings = FAST,
    **azure: Any,
) -> AsyncIterator[Provisioner]:
    """A provisioner on the Azure backend, talking to the local ARM endpoint at `url`."""
    settings = azure_settings(url, **azure)
    async with azure_backend(url, settings) as backend:
        try:
            yield stack.add_provisioner(
                ProvisionerSettings(
                    namespace=namespace, backend="azure", provisioning=provisioning, azure=settings
                ),
                backend,
            )
        finally:
            # Nothing may call the client once it is closed: the SDK would open a new session
            # that no one closes.
            await stack.stop()


@contextlib.asynccontextmanager
async def azure_backend(url: str, settings: AzureSettings) -> AsyncIterator[AzureBackend]:
    async with ContainerServiceClient(
        object(),  # type: ignore[arg-type]  # no token for the local endpoint
        SUB,
        base_url=url,
        authentication_policy=SansIOHTTPPolicy(),
    ) as client:
        yield AzureBackend(client, settings)


def azure_settings(url: str, **overrides: Any) -> AzureSettings:
    values: dict[str, Any] = {
        "subscription_id": SUB,
        "resource_group": RG,
        "cluster_name": AKS,
        "endpoint": url,
        "credential": "none",
        "polling_interval_s": 0.1,
        "operation_wait_s": 5.0,
    }
    return AzureSettings(**(values | overrides))


def inference(name: str, namespace: str, preset: str, instance_type: str | None) -> dict[str, Any]:
    doc = seed("inference")
    doc["metadata"].update(name=name, namespace=namespace)
    doc["inference"]["preset"]["name"] = preset
    if preset.startswith("llama"):
        doc["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    if instance_type is None:
        del doc["resource"]["instanceType"]
    else:
        doc["resource"]["instanceType"] = instance_type
    return doc


async def gone(kube: KubeClient, namespace: str, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = await kube.list(resources.WORKSPACES, namespace=namespace)
        if not any(i["metadata"]["name"] == name for i in listed["items"]):
            return
        await asyncio.sleep(0.2)
    obj = await kube.get(resources.WORKSPACES, name, namespace=namespace)
    raise AssertionError(f"{name} still there: {obj.get('status')}")


async def workspace_nodes(kube: KubeClient, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = await kube.list(
        resources.NODES, label_selector=naming.workspace_selector(namespace, name)
    )
    return list(listed["items"])


def assert_kaito_nodes(nodes: list[dict[str, Any]], namespace: str, name: str, sku: str) -> None:
    for node in nodes:
        labels = node["metadata"]["labels"]
        assert labels["kaito.sh/workspace"] == name
        assert labels["kaito.sh/workspacenamespace"] == namespace
        assert labels["apps"] == "phi-3"  # the Workspace's matchLabels, for its pods' affinity
        assert labels["node.kubernetes.io/instance-type"] == sku
        taints = [(t["key"], t.get("value"), t["effect"]) for t in node["spec"].get("taints") or []]
        assert ("sku", "gpu", "NoSchedule") in taints
        assert int(node["status"]["allocatable"]["nvidia.com/gpu"]) >= 1


# ---------------------------------------------------------------------- karpenter

THEIRS = "example.com/keep"


@pytest.mark.usefixtures("karpenter")
async def test_karpenter_seed_gets_a_labelled_tainted_gpu_node(
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    stack: Stack,
    bus: Bus,
) -> None:
    backend = KarpenterBackend(kube, KarpenterSettings(), field_manager="kairyu-provisioner")
    await backend.prepare()
    stack.add_provisioner(
        ProvisionerSettings(namespace=namespace, backend="karpenter", provisioning=FAST), backend
    )
    doc = inference("phi", namespace, "phi-3-mini-4k-instruct", "Standard_NC6s_v3")
    doc["metadata"]["finalizers"] = [THEIRS]  # a finalizer of the user's, kept beside ours
    cluster.apply(doc)
    obj = await until(kube, namespace, "phi", is_true("ResourceReady"), what="ResourceReady=True")
    workers = obj["status"]["workerNodes"]
    assert len(workers) == 1
    assert condition(obj, "NodesReady")["status"] == "True"
    assert sorted(obj["metadata"]["finalizers"]) == sorted([THEIRS, naming.FINALIZER])
    for _ in range(40):  # Karpenter names the node in the claim's status a moment later
        claims = await kube.list(
            resources.NODECLAIMS, label_selector=naming.workspace_selector(namespace, "phi")
        )
        assert len(claims["items"]) == 1
        claim = claims["items"][0]
        if claim.get("status", {}).get("nodeName"):
            break
        await asyncio.sleep(0.25)
    assert claim["status"]["nodeName"] == workers[0]
    disk = load_catalog().preset("phi-3-mini-4k-instruct").disk_gib  # type: ignore[union-attr]
    assert claim["spec"]["resources"]["requests"]["storage"] == f"{disk}Gi"
    nodes = await workspace_nodes(kube, namespace, "phi")
    assert [n["metadata"]["name"] for n in nodes] == workers
    assert_kaito_nodes(nodes, namespace, "phi", "Standard_NC6s_v3")
    assert obj["status"]["workerNodesPlanDigest"] == obj["status"]["plan"]["digest"]

    cluster.kubectl("delete", "workspace", "phi", "-n", namespace, "--wait=false")
    # Ours goes once the nodes are gone; the user's stays until the user removes it.
    await until(
        kube,
        namespace,
        "phi",
        lambda o: o["metadata"].get("finalizers") == [THEIRS],
        what="only the user's finalizer left",
    )
    cluster.kubectl(
        "patch", "workspace", "phi", "-n", namespace, "--type=json",
        "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]',
    )  # fmt: skip
    await gone(kube, namespace, "phi")
    assert await workspace_nodes(kube, namespace, "phi") == []
    left = await kube.list(
        resources.NODECLAIMS, label_selector=naming.workspace_selector(namespace, "phi")
    )
    assert left["items"] == []


@pytest.mark.usefixtures("karpenter")
async def test_karpenter_multi_node_plan_gets_all_its_nodes(
    cluster: LocalCluster, namespace: str, kube: KubeClient, stack: Stack
) -> None:
    backend = KarpenterBackend(kube, KarpenterSettings(), field_manager="kairyu-provisioner")
    await backend.prepare()
    stack.add_provisioner(
        ProvisionerSettings(namespace=namespace, backend="karpenter", provisioning=FAST), backend
    )
    doc = inference("big", namespace, "llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4")
    cluster.apply(doc)
    obj = await until(kube, namespace, "big", is_true("ResourceReady"), what="ResourceReady=True")
    assert obj["status"]["plan"]["nodeCount"] == 2
    assert len(obj["status"]["workerNodes"]) == 2
    nodes = await workspace_nodes(kube, namespace, "big")
    assert sorted(n["metadata"]["name"] for n in nodes) == obj["status"]["workerNodes"]
    cluster.kubectl("delete", "workspace", "big", "-n", namespace, "--wait=false")
    await gone(kube, namespace, "big")
    assert await workspace_nodes(kube, namespace, "big") == []


# ---------------------------------------------------------------------- azure


async def test_azure_seed_gets_an_agent_pool_and_frees_it_on_delete(
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    stack: Stack,
    fake_arm: tuple[FakeArm, str],
) -> None:
    arm, url = fake_arm
    async with azure_provisioner(stack, url, namespace):
        cluster.apply(inference("phi", namespace, "phi-3-mini-4k-instruct", "Standard_NC6s_v3"))
        obj = await until(
            kube, namespace, "phi", is_true("ResourceReady"), what="ResourceReady=True"
        )
        uid = obj["metadata"]["uid"]
        pool_name = naming.agent_pool_name(uid, "Standard_NC6s_v3")
        assert list(arm.pools) == [pool_name]
        props = arm.pools[pool_name]["properties"]
        disk = load_catalog().preset("phi-3-mini-4k-instruct").disk_gib  # type: ignore[union-attr]
        assert (props["vmSize"], props["count"], props["osDiskSizeGB"]) == (
            "Standard_NC6s_v3",
            1,
            disk,
        )
        assert props["nodeTaints"] == ["sku=gpu:NoSchedule"]
        assert props["tags"]["kairyu-workspace-uid"] == uid
        nodes = await workspace_nodes(kube, namespace, "phi")
        assert [n["metadata"]["name"] for n in nodes] == obj["status"]["workerNodes"]
        assert_kaito_nodes(nodes, namespace, "phi", "Standard_NC6s_v3")
        assert nodes[0]["metadata"]["labels"]["kubernetes.azure.com/agentpool"] == pool_name

        cluster.kubectl("delete", "workspace", "phi", "-n", namespace, "--wait=false")
        await gone(kube, namespace, "phi")
        assert arm.pools == {}
        assert await workspace_nodes(kube, namespace, "phi") == []


async def test_azure_quota_exceeded_falls_back_to_the_next_cheapest_sku(
    *,
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    stack: Stack,
    fake_arm: tuple[FakeArm, str],
    spans: InMemorySpanExporter,
) -> None:
    arm, url = fake_arm
    arm.deny("Standard_NC4as_T4_v3", "QuotaExceeded")
    async with azure_provisioner(stack, url, namespace):
        cluster.apply(inference("auto", namespace, "phi-3-mini-4k-instruct", None))
        obj = await until(
            kube, namespace, "auto", is_true("ResourceReady"), what="ResourceReady=True"
        )
    plan = obj["status"]["plan"]
    assert plan["instanceType"] == "Standard_NC8as_T4_v3"
    assert plan["excludedInstanceTypes"] == ["Standard_NC4as_T4_v3"]
    planned = condition(obj, "Planned")
    assert "re-planned after: QuotaExceeded for Standard_NC4as_T4_v3" in planned["message"]
    assert "exceeding approved Standard_NC4as_T4_v3 family Cores quota" in planned["message"]
    # Only the fallback's pool remains; the refused one was removed.
    assert [p["properties"]["vmSize"] for p in arm.pools.values()] == ["Standard_NC8as_T4_v3"]
    nodes = await workspace_nodes(kube, namespace, "auto")
    assert [n["metadata"]["labels"]["node.kubernetes.io/instance-type"] for n in nodes] == [
        "Standard_NC8as_T4_v3"
    ]
    # The history: a Warning event on the Workspace with Azure's message ...
    events = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector=involvedObject.name=auto",
        "-o",
        "jsonpath={range .items[*]}{.type} {.reason}: {.message}{'\\n'}{end}",
    ).stdout
    assert "Warning QuotaExceeded: Standard_NC4as_T4_v3: Preflight validation" in events
    assert "asking the planner for another SKU (re-plan 1 of 3)" in events
    # ... and the trace: a provision span that failed with the reason, then one that succeeded.
    provision = [s for s in spans.get_finished_spans() if s.name == "provision"]
    failed = [
        s for s in provision if s.status.description and "QuotaExceeded" in s.status.description
    ]
    assert failed, "no provision span carries the QuotaExceeded failure"
    assert (failed[0].attributes or {})["kairyu.plan.instance_type"] == "Standard_NC4as_T4_v3"
    ready_events = [
        e
        for s in provision
        for e in s.events
        if e.name == "condition" and e.attributes and e.attributes.get("reason") == "NodesReady"
    ]
    assert ready_events
    trace_ids = {s.context.trace_id for s in provision}
    rollout = rollout_context(obj["metadata"]["uid"], obj["metadata"]["generation"])
    rollout_trace_id = trace.get_current_span(rollout).get_span_context().trace_id
    assert trace_ids == {rollout_trace_id}, "the provision spans are not in the rollout's trace"


async def test_re_plans_stop_at_max_replans_with_the_reason(
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    stack: Stack,
    fake_arm: tuple[FakeArm, str],
) -> None:
    arm, url = fake_arm
    arm.deny("Standard_NC4as_T4_v3", "QuotaExceeded")
    arm.deny("Standard_NC8as_T4_v3", "ZonalAllocationFailed")
    once = ProvisioningSettings(check_interval_s=1.0, max_replans=1)
    async with azure_provisioner(stack, url, namespace, provisioning=once):
        cluster.apply(inference("auto", namespace, "phi-3-mini-4k-instruct", None))
        obj = await until(
            kube,
            namespace,
            "auto",
            lambda o: "gave up" in condition(o, "ResourceReady").get("message", ""),
            what="giving up",
        )
    ready = condition(obj, "ResourceReady")
    assert (ready["status"], ready["reason"]) == ("False", "AllocationFailed")
    assert ready["message"].startswith("Standard_NC8as_T4_v3: Allocation failed.")
    assert ready["message"].endswith("gave up after 1 re-plans (max_replans=1)")
    assert obj["status"]["plan"]["excludedInstanceTypes"] == ["Standard_NC4as_T4_v3"]
    assert arm.pools == {}  # the refused pools were removed, nothing is left half-made


async def test_azure_multi_node_plan_gets_one_pool_with_all_nodes(
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    stack: Stack,
    fake_arm: tuple[FakeArm, str],
) -> None:
    arm, url = fake_arm
    async with azure_provisioner(stack, url, namespace):
        cluster.apply(
            inference("big", namespace, "llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4")
        )
        obj = await until(
            kube, namespace, "big", is_true("ResourceReady"), what="ResourceReady=True"
        )
        assert len(obj["status"]["workerNodes"]) == 2
        (pool,) = arm.pools.values()
        assert pool["properties"]["count"] == 2
        cluster.kubectl("delete", "workspace", "big", "-n", namespace, "--wait=false")
        await gone(kube, namespace, "big")
        assert await workspace_nodes(kube, namespace, "big") == []


# ---------------------------------------------------------------------- byo


async def test_byo_uses_existing_nodes_and_says_when_too_few_match(
    cluster: LocalCluster, namespace: str, kube: KubeClient, stack: Stack
) -> None:
    stack.add_provisioner(
        ProvisionerSettings(namespace=namespace, backend="byo", provisioning=FAST), ByoBackend()
    )
    label = {"apps": namespace}  # unique to this test, so other tests' nodes do not match
    doc = inference("mine", namespace, "llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4")
    doc["resource"]["labelSelector"] = {"matchLabels": label}
    a100 = GpuNodeSpec(
        instance_type="Standard_NC24ads_A100_v4",
        gpu_product="NVIDIA-A100-PCIE-80GB",
        gpu_count=1,
        gpu_memory_mib=81920,
    )
    first = cluster.add_gpu_nodes(a100, count=1, prefix=f"{namespace}-a", labels=label)
    cluster.apply(doc)
    # The plan can come before kwok has made the first node Ready ("0 of 2"); the provisioner
    # looks at user nodes again on its timer, and then says what a user sees from then on.
    obj = await until(
        kube,
        namespace,
        "mine",
        lambda o: (
            has_reason("ResourceReady", "NotEnoughNodes")(o)
            and "1 of 2 nodes ready" in condition(o, "ResourceReady").get("message", "")
        ),
        what="NotEnoughNodes, 1 of 2 nodes ready",
    )
    message = condition(obj, "ResourceReady")["message"]
    assert "need 2 Ready Standard_NC24ads_A100_v4 node(s)" in message
    assert f"apps={namespace}" in message
    assert "1 of 2 nodes ready" in message
    assert "finalizers" not in obj["metadata"]  # nothing of ours to free
    second = cluster.add_gpu_nodes(a100, count=1, prefix=f"{namespace}-b", labels=label)
    obj = await until(kube, namespace, "mine", is_true("ResourceReady"), what="ResourceReady=True")
    assert obj["status"]["workerNodes"] == sorted(first + second)
    cluster.kubectl("delete", "workspace", "mine", "-n", namespace)
    assert sorted(
        n["metadata"]["name"]
        for n in (await kube.list(resources.NODES, label_selector=f"apps={namespace}"))["items"]
    ) == sorted(first + second), "byo must never delete the user's nodes"


async def test_byo_sizes_a_workspace_from_its_nodes_gpu_labels_as_they_come(
    cluster: LocalCluster, namespace: str, kube: KubeClient, bus: Bus
) -> None:
    stack = Stack(bus, kube, namespace, planning=PlanningSettings(node_provisioner="byo"))
    try:
        stack.add_provisioner(
            ProvisionerSettings(namespace=namespace, backend="byo", provisioning=FAST),
            ByoBackend(),
        )
        label = {"apps": namespace}
        doc = inference("own", namespace, "phi-3-mini-4k-instruct", None)  # KAITO's BYO: no SKU
        doc["resource"]["labelSelector"] = {"matchLabels": label}
        cluster.apply(doc)
        obj = await until(
            kube, namespace, "own", has_reason("Planned", "NoMatchingNodes"), what="no nodes yet"
        )
        assert condition(obj, "Planned")["message"].startswith(
            "No nodes found matching the specified label selector"
        )
        t4 = GpuNodeSpec(
            instance_type="Standard_NC4as_T4_v3",
            gpu_product="Tesla-T4",
            gpu_count=1,
            gpu_memory_mib=16384,
        )
        (mine,) = cluster.add_gpu_nodes(t4, count=1, prefix=f"{namespace}-t4", labels=label)
        # Nodes wake no Workspace (they carry none's label): the plan comes on the next look.
        obj = await until(
            kube, namespace, "own", is_true("ResourceReady"), what="ResourceReady", timeout=60
        )
        plan = obj["status"]["plan"]
        assert (plan["instanceType"], plan["nodeCount"]) == ("Standard_NC4as_T4_v3", 1)
        assert "estimatedCostPerHour" not in plan  # your nodes: kairyu knows no price
        assert plan["reason"].startswith("your nodes matching resource.labelSelector")
        assert obj["status"]["workerNodes"] == [mine]
        # The plan stays while the spec does: GPU Feature Discovery restarting (its labels gone
        # for a while) does not unplan a serving Workspace when something else wakes it.
        cluster.kubectl("label", "node", mine, "nvidia.com/gpu.product-")
        cluster.kubectl("annotate", "workspace", "own", "-n", namespace, "team=ml")
        await until(
            kube,
            namespace,
            "own",
            lambda o: (o["metadata"].get("annotations") or {}).get("team") == "ml",
            what="the annotation",
        )
        await asyncio.sleep(1.0)  # the planner's turn on the annotated Workspace
        obj = await kube.get(resources.WORKSPACES, "own", namespace=namespace)
        assert condition(obj, "Planned")["status"] == "True"
        assert obj["status"]["plan"]["instanceType"] == "Standard_NC4as_T4_v3"
    finally:
        await stack.stop()


# ---------------------------------------------------------------------- timeouts and orphans


async def test_a_slow_pool_times_out_with_a_reason_and_recovers(
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    stack: Stack,
    fake_arm: tuple[FakeArm, str],
) -> None:
    arm, url = fake_arm
    arm.operation_delay_s = 6.0
    impatient = ProvisioningSettings(check_interval_s=0.5, readiness_timeout_s=1.5)
    async with azure_provisioner(
        stack, url, namespace, provisioning=impatient, operation_wait_s=0.5
    ):
        cluster.apply(inference("slow", namespace, "phi-3-mini-4k-instruct", "Standard_NC6s_v3"))
        obj = await until(
            kube,
            namespace,
            "slow",
            has_reason("ResourceReady", "ProvisioningTimeout"),
            what="ProvisioningTimeout",
        )
        message = condition(obj, "ResourceReady")["message"]
        assert message.startswith("nodes not Ready after 2s: 0 of 1 nodes ready")
        assert ": Creating" in message  # which pool is still being created
        await until(kube, namespace, "slow", is_true("ResourceReady"), what="ResourceReady=True")


async def test_orphaned_pools_are_removed_once_the_view_is_synced(
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    stack: Stack,
    fake_arm: tuple[FakeArm, str],
) -> None:
    arm, url = fake_arm
    settings = azure_settings(url)
    orphan = NodeTarget(
        namespace=namespace,
        name="gone",
        uid="00000000-dead-beef-0000-000000000000",
        generation=1,
        instance_type="Standard_NC6s_v3",
        node_count=1,
        disk_gib=64,
        selector=LabelSelector(match_labels={"apps": "phi-3"}),
        match_labels={"apps": "phi-3"},
    )
    async with azure_backend(url, settings) as backend:
        assert (await backend.ensure(orphan, [])).waiting == []
        assert len(await workspace_nodes(kube, namespace, "gone")) == 1
        # Agent pools have no Kubernetes object: the provisioner's scan at start finds them.
        stack.add_provisioner(
            ProvisionerSettings(
                namespace=namespace, backend="azure", provisioning=FAST, azure=settings
            ),
            backend,
        )

        async def removed() -> bool:
            return arm.pools == {}

        try:
            await wait_for(removed, "the orphaned pool's removal")
        finally:
            await stack.stop()  # before the client closes
    assert await workspace_nodes(kube, namespace, "gone") == []


async def view_of(kube: KubeClient, namespace: str, name: str) -> View:
    """A view holding what the watcher would publish of the Workspace's nodes (no Workspace)."""
    view = View(FOLLOWS["provisioner"])
    for node in await workspace_nodes(kube, namespace, name):
        view.apply(ObjectKey.of("Node", node), trim("Node", node))
    return view


async def test_a_workspace_missing_from_the_view_or_a_missing_crd_frees_nothing_of_a_live_one(
    *,
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    fake_arm: tuple[FakeArm, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arm, url = fake_arm
    cluster.apply(inference("live", namespace, "phi-3-mini-4k-instruct", "Standard_NC6s_v3"))
    meta = (await kube.get(resources.WORKSPACES, "live", namespace=namespace))["metadata"]
    target = NodeTarget(
        namespace=namespace,
        name="live",
        uid=meta["uid"],
        generation=1,
        instance_type="Standard_NC6s_v3",
        node_count=1,
        disk_gib=64,
        selector=LabelSelector(match_labels={"apps": "phi-3"}),
        match_labels={"apps": "phi-3"},
    )
    settings = azure_settings(url)
    key = f"{namespace}/live"
    async with azure_backend(url, settings) as backend:
        assert (await backend.ensure(target, [])).waiting == []
        # The view lacks the Workspace (a state lost, or a forged tombstone) but holds its
        # nodes: the apiserver says it is alive and well, so nothing is freed.
        provisioner = Provisioner(
            settings=ProvisionerSettings(
                namespace=namespace, backend="azure", provisioning=FAST, azure=settings
            ),
            kube=kube,
            view=await view_of(kube, namespace, "live"),
            catalog=load_catalog(),
            backend=backend,
        )
        assert await provisioner.reconcile(key) is None
        assert await provisioner.collect_orphans() == []
        assert len(arm.pools) == 1
        # The Workspace type not served (its CRD deleted or not yet established) answers 404 too,
        # for every Workspace: that is no orphan.
        unserved = dataclasses.replace(resources.WORKSPACES, plural="workspacez")
        with monkeypatch.context() as patched:
            patched.setattr(resources, "WORKSPACES", unserved)
            assert await provisioner.collect_orphans() == []
            await provisioner.reconcile(key)
        assert len(arm.pools) == 1
        # Really deleted: the same reconcile frees the pool.
        await asyncio.to_thread(cluster.kubectl, "delete", "workspace", "live", "-n", namespace)
        await provisioner.reconcile(key)
    assert arm.pools == {}
    assert await workspace_nodes(kube, namespace, "live") == []


@pytest.mark.usefixtures("karpenter")
async def test_a_plan_above_the_node_limit_written_by_hand_creates_no_nodeclaim(
    cluster: LocalCluster, namespace: str, kube: KubeClient
) -> None:
    cluster.apply(inference("big", namespace, "phi-3-mini-4k-instruct", "Standard_NC6s_v3"))
    meta = (await kube.get(resources.WORKSPACES, "big", namespace=namespace))["metadata"]
    # Whoever may write the status (not the planner, which plans at most max_nodes) asks for 5.
    plan = {
        "instanceType": "Standard_NC6s_v3",
        "nodeCount": 5,
        "gpusPerNode": 1,
        "tensorParallelSize": 1,
        "pipelineParallelSize": 1,
        "dtype": "float16",
        "runtime": "vllm",
        "observedGeneration": meta["generation"],
    }
    await apply_status(
        kube, namespace=namespace, name="big", field_manager="someone", status={"plan": plan}
    )
    backend = KarpenterBackend(kube, KarpenterSettings(), field_manager="kairyu-provisioner")
    await backend.prepare()
    live = await kube.get(resources.WORKSPACES, "big", namespace=namespace)
    view = View(FOLLOWS["provisioner"])
    view.apply(ObjectKey.of("Workspace", live), trim("Workspace", live))
    provisioner = Provisioner(
        settings=ProvisionerSettings(
            namespace=namespace,
            backend="karpenter",
            provisioning=FAST.model_copy(update={"max_nodes": 4}),
        ),
        kube=kube,
        view=view,
        catalog=load_catalog(),
        backend=backend,
    )
    await provisioner.reconcile(f"{namespace}/big")
    obj = await kube.get(resources.WORKSPACES, "big", namespace=namespace)
    ready = condition(obj, "ResourceReady")
    assert (ready["status"], ready["reason"]) == ("False", "PlanOverNodeLimit"), ready
    assert "5 Standard_NC6s_v3 nodes" in ready["message"]
    assert "KAIRYU_PROVISIONING__MAX_NODES" in ready["message"]
    claims = await kube.list(
        resources.NODECLAIMS, label_selector=naming.workspace_selector(namespace, "big")
    )
    assert claims["items"] == []
    # The CRD refuses a plan above MAX_NODE_COUNT outright, whoever writes it.
    with pytest.raises(errors.KubeError, match="nodeCount"):
        await apply_status(
            kube,
            namespace=namespace,
            name="big",
            field_manager="someone",
            status={"plan": plan | {"nodeCount": 101}},
        )


# ---------------------------------------------------------------------- crash and restart


def provisioner_process(
    cluster: LocalCluster,
    nats: LocalNats,
    stream: StreamSpec,
    namespace: str,
    log_dir: Path,
    **env: str,
) -> ManagedProcess:
    return service_process(
        "provisioner",
        cluster=cluster,
        nats=nats,
        stream=stream,
        namespace=namespace,
        log_dir=log_dir,
        env={"KAIRYU_PROVISIONING__CHECK_INTERVAL_S": "1", **env},
    )


async def wait_for(probe: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} never happened")


async def test_azure_provisioner_killed_mid_create_leaves_exactly_the_planned_nodes(
    *,
    cluster: LocalCluster,
    nats_server: LocalNats,
    stream_spec: StreamSpec,
    namespace: str,
    kube: KubeClient,
    stack: Stack,
    fake_arm: tuple[FakeArm, str],
    tmp_path: Path,
) -> None:
    arm, url = fake_arm
    arm.operation_delay_s = 3.0
    env = {
        "KAIRYU_BACKEND": "azure",
        "KAIRYU_AZURE__SUBSCRIPTION_ID": SUB,
        "KAIRYU_AZURE__RESOURCE_GROUP": RG,
        "KAIRYU_AZURE__CLUSTER_NAME": AKS,
        "KAIRYU_AZURE__ENDPOINT": url,
        "KAIRYU_AZURE__CREDENTIAL": "none",
        "KAIRYU_AZURE__POLLING_INTERVAL_S": "0.2",
    }
    first = provisioner_process(cluster, nats_server, stream_spec, namespace, tmp_path, **env)
    first.start()
    doc = inference("big", namespace, "llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4")
    cluster.apply(doc)

    async def creating() -> bool:
        return any(r.startswith("PUT ") for r in arm.requests)

    try:
        await wait_for(creating, "the agent pool PUT")
    finally:
        first.kill()  # SIGKILL while Azure is still creating the pool
    second = provisioner_process(cluster, nats_server, stream_spec, namespace, tmp_path, **env)
    second.start()
    try:
        obj = await until(
            kube, namespace, "big", is_true("ResourceReady"), what="ResourceReady=True"
        )
    finally:
        second.stop()
    assert len(arm.pools) == 1
    (pool,) = arm.pools.values()
    assert pool["properties"]["count"] == 2
    assert [r for r in arm.requests if r.startswith("PUT ")] == [f"PUT {pool['id']}"]
    nodes = await workspace_nodes(kube, namespace, "big")
    assert sorted(n["metadata"]["name"] for n in nodes) == obj["status"]["workerNodes"]
    assert len(nodes) == 2


async def test_karpenter_provisioner_killed_mid_launch_leaves_exactly_the_planned_nodes(
    *,
    cluster: LocalCluster,
    karpenter: LocalKarpenter,
    nats_server: LocalNats,
    stream_spec: StreamSpec,
    namespace: str,
    kube: KubeClient,
    stack: Stack,
    tmp_path: Path,
) -> None:
    # Nodes of this class register 3 s after launch: time to kill the provisioner in between.
    cluster.apply(
        {
            "apiVersion": "karpenter.kwok.sh/v1alpha1",
            "kind": "KWOKNodeClass",
            "metadata": {"name": "slow"},
            "spec": {"nodeRegistrationDelay": "3s"},
        }
    )
    env = {
        "KAIRYU_BACKEND": "karpenter",
        "KAIRYU_KARPENTER__NODE_CLASS_NAME": "slow",
        "KAIRYU_KARPENTER__NODE_POOL": "kaito-slow",
    }
    first = provisioner_process(cluster, nats_server, stream_spec, namespace, tmp_path, **env)
    first.start()
    doc = inference("big", namespace, "llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4")
    cluster.apply(doc)
    selector = naming.workspace_selector(namespace, "big")

    async def claimed() -> bool:
        listed = await kube.list(resources.NODECLAIMS, label_selector=selector)
        return bool(listed["items"])

    try:
        await wait_for(claimed, "the first NodeClaim")
    finally:
        first.kill()
    assert await workspace_nodes(kube, namespace, "big") == [], "killed too late to matter"
    second = provisioner_process(cluster, nats_server, stream_spec, namespace, tmp_path, **env)
    second.start()
    try:
        obj = await until(
            kube, namespace, "big", is_true("ResourceReady"), what="ResourceReady=True"
        )
    finally:
        second.stop()
    claims = await kube.list(resources.NODECLAIMS, label_selector=selector)
    assert len(claims["items"]) == 2
    nodes = await workspace_nodes(kube, namespace, "big")
    assert sorted(n["metadata"]["name"] for n in nodes) == obj["status"]["workerNodes"]
    assert len(nodes) == 2
    await asyncio.to_thread(
        cluster.kubectl, "delete", "workspace", "big", "-n", namespace, "--wait=false"
    )
