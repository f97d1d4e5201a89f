"""Hand-offs across generations and plans, against the real cluster (issue 15).

Each service acts only on the results of the stage before it for the Workspace's current
generation and plan, and the watcher counts only conditions of the current generation. Two ways
to get that wrong, each shown here with every version of the object recorded from a watch (a
poll could miss a version that lived for a few milliseconds):

- an edit that keeps the plan: `WorkspaceReady` must not say True for the new generation before
  each service has reported it again;
- an edit that re-plans to another SKU: the deployer must not run the new plan on the old SKU's
  nodes while they are still reported Ready.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from rollout_stack import rollout_stack, start_node_services, start_workload_services

from kairyu_contracts.catalog import load_catalog
from kairyu_core.bus import Bus
from kairyu_core.kube import KubeClient, resources, watch
from kairyu_localenv import LocalCluster
from kairyu_testing.seeds import seed
from kairyu_testing.stack import ServiceStack
from kairyu_testing.workspaces import condition, is_true, until

# Not the seed's name: nodes are cluster-scoped, and other tests find the seed's by that label.
NAME = "generations"
NEEDED = ("Planned", "ResourceReady", "InferenceReady")
ROLLOUT_S = 90.0  # Karpenter's kwok provider makes a node in seconds; a loaded machine is slower


def in_namespace(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    doc["metadata"] |= {"namespace": namespace, "name": NAME}
    return doc


def ready_for(generation: int) -> Any:
    """WorkspaceReady=True written for `generation`."""

    def check(obj: dict[str, Any]) -> bool:
        ready = condition(obj, "WorkspaceReady")
        return ready.get("status") == "True" and ready.get("observedGeneration") == generation

    return check


@contextlib.asynccontextmanager
async def recording(
    kube: KubeClient, resource: resources.Resource, namespace: str
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every version of the namespace's `resource` objects from now until the block ends."""
    listed = await kube.list(resource, namespace=namespace)
    seen: list[dict[str, Any]] = list(listed.get("items") or [])
    since = listed["metadata"]["resourceVersion"]

    async def follow() -> None:
        async for change in watch(kube, resource, namespace=namespace, since=since):
            seen.append(change.object)

    task = asyncio.create_task(follow())
    try:
        yield seen
    finally:
        await asyncio.sleep(1)  # let the stream deliver what was written last
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def affinity_nodes(deployment: dict[str, Any]) -> set[str]:
    """The node names the Deployment's pods are pinned to (the deployer's required affinity)."""
    affinity = deployment["spec"]["template"]["spec"].get("affinity") or {}
    required = (affinity.get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    return {
        value
        for term in required.get("nodeSelectorTerms") or []
        for field in term.get("matchFields") or []
        for value in field.get("values") or []
    }


def dtype_of(deployment: dict[str, Any]) -> str:
    args = str(deployment["spec"]["template"]["spec"]["containers"][0]["args"][0])
    return next(a.split("=", 1)[1] for a in args.split() if a.startswith("--dtype="))


@pytest.fixture
async def services(
    karpenter: object, bus: Bus, kube: KubeClient, namespace: str
) -> AsyncIterator[ServiceStack]:
    stack = await rollout_stack(bus, kube, namespace, tuner=False)
    yield stack
    await stack.stop()


async def test_an_edit_that_keeps_the_plan_is_ready_again_only_once_each_service_reported_it(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    doc = in_namespace(seed("inference"), namespace)
    await asyncio.to_thread(cluster.apply, doc)
    first = await until(kube, namespace, NAME, ready_for(1), what="ready", timeout=ROLLOUT_S)
    # preferredNodes changes the spec (generation 2) but not the plan, the nodes or the pods.
    doc["resource"]["preferredNodes"] = ["no-such-node"]
    async with recording(kube, resources.WORKSPACES, namespace) as versions:
        await asyncio.to_thread(cluster.apply, doc)
        final = await until(
            kube, namespace, NAME, ready_for(2), what="ready again", timeout=ROLLOUT_S
        )

    status, was = final["status"], first["status"]
    assert final["metadata"]["generation"] == 2
    assert status["plan"]["digest"] == was["plan"]["digest"]  # the same plan…
    assert status["workerNodes"] == was["workerNodes"]  # …on the same nodes…
    assert status["workerNodesPlanDigest"] == status["plan"]["digest"]
    # …and yet each service said so again, for generation 2.
    assert {kind: condition(final, kind)["observedGeneration"] for kind in NEEDED} == dict.fromkeys(
        NEEDED, 2
    )
    early = [
        {kind: condition(v, kind).get("observedGeneration") for kind in NEEDED}
        for v in versions
        if ready_for(2)(v)
        and any(condition(v, kind).get("observedGeneration") != 2 for kind in NEEDED)
    ]
    assert early == [], f"WorkspaceReady=True for generation 2 before it was handled: {early}"
    assert any(ready_for(2)(v) for v in versions), "the watch saw the final version"


@pytest.fixture
async def stacks(karpenter: object, bus: Bus) -> AsyncIterator[list[ServiceStack]]:
    """Stacks the test starts and stops itself; whatever is still running is stopped at the end."""
    started: list[ServiceStack] = []
    yield started
    for stack in reversed(started):
        await stack.stop()


async def test_a_replan_to_another_sku_never_runs_the_new_plan_on_the_old_nodes(
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    bus: Bus,
    stacks: list[ServiceStack],
) -> None:
    catalog = load_catalog()

    async def node_services(*, provisioner: bool) -> ServiceStack:
        stack = ServiceStack(bus)
        stacks.append(stack)
        await start_node_services(
            stack, bus=bus, kube=kube, namespace=namespace, catalog=catalog, provisioner=provisioner
        )
        return stack

    workload = ServiceStack(bus)
    stacks.append(workload)
    start_workload_services(
        workload, bus=bus, kube=kube, namespace=namespace, catalog=catalog, tuner=False
    )
    nodes = await node_services(provisioner=True)
    doc = in_namespace(seed("inference"), namespace)  # Standard_NC6s_v3: V100, float16
    await asyncio.to_thread(cluster.apply, doc)
    first = await until(kube, namespace, NAME, ready_for(1), what="ready", timeout=ROLLOUT_S)
    (old_node,) = first["status"]["workerNodes"]

    async with recording(kube, resources.DEPLOYMENTS, namespace) as deployments:
        # The provisioner stops, so the old SKU's node stays reported Ready (ResourceReady=True
        # of generation 1, workerNodes) while the planner plans generation 2 for an A100.
        await nodes.stop()
        planning = await node_services(provisioner=False)
        doc["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"  # bfloat16
        await asyncio.to_thread(cluster.apply, doc)
        replanned = await until(
            kube,
            namespace,
            NAME,
            lambda o: (
                condition(o, "Planned").get("observedGeneration") == 2
                and o["status"]["plan"]["instanceType"] == "Standard_NC24ads_A100_v4"
            ),
            what="the new plan",
        )
        assert replanned["status"]["workerNodes"] == [old_node]  # still the old SKU's, Ready
        # The deployer hears of the new plan within milliseconds (the Workspace's new state); give
        # it ample time to do the wrong thing.
        await until(
            kube,
            namespace,
            NAME,
            lambda o: (
                "ResourceReady of generation 2" in condition(o, "WorkspaceReady").get("message", "")
            ),
            what="the summary waiting for the nodes",
        )
        await asyncio.sleep(3)
        assert {dtype_of(d) for d in deployments} == {"float16"}, "new plan on the old nodes"

        await planning.stop()
        await node_services(provisioner=True)
        final = await until(
            kube, namespace, NAME, ready_for(2), what="ready on the A100", timeout=ROLLOUT_S
        )

    (new_node,) = final["status"]["workerNodes"]
    assert new_node != old_node
    assert final["status"]["workerNodesPlanDigest"] == final["status"]["plan"]["digest"]
    deployment = await kube.get(resources.DEPLOYMENTS, NAME, namespace=namespace)
    assert (dtype_of(deployment), affinity_nodes(deployment)) == ("bfloat16", {new_node})
    mixed = [affinity_nodes(d) for d in deployments if dtype_of(d) == "bfloat16"]
    assert all(old_node not in pinned for pinned in mixed), f"on the old node: {mixed}"
    assert is_true("InferenceReady")(final)
