"""The planner against the real cluster and nats-server: plans, refusals, re-plans, dead letters."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kairyu_core.bus import Bus, Consumer
from kairyu_core.catalog import load_catalog
from kairyu_core.events import PlanCreated, ReplanRequested, WorkspaceObserved, WorkspaceRef
from kairyu_core.kube import KubeClient, resources
from kairyu_core.localenv import LocalCluster
from kairyu_core.testing.bus import Inbox, dead_letters
from kairyu_core.testing.manifests import seed
from kairyu_planner.app import CONSUMED, Planner, consumer_spec
from kairyu_planner.settings import PlannerSettings
from kairyu_watcher.app import Watcher
from kairyu_watcher.settings import WatcherSettings


class Services:
    """The watcher and the planner, running on the test's stream."""

    def __init__(self, bus: Bus, kube: KubeClient, namespace: str) -> None:
        settings = PlannerSettings()
        self.watcher = Watcher(
            settings=WatcherSettings(namespace=namespace, resync_interval_s=3600),
            bus=bus,
            kube=kube,
        )
        planner = Planner(settings=settings, bus=bus, kube=kube, catalog=load_catalog())
        self.consumer = Consumer(
            bus,
            consumer_spec(settings, bus),
            service=settings.service_name,
            events=CONSUMED,
            handler=planner.handle,
        )
        self.tasks = [
            asyncio.create_task(self.watcher.run()),
            asyncio.create_task(self.consumer.run()),
        ]

    async def stop(self) -> None:
        await self.consumer.stop(grace_s=1)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def services(bus: Bus, kube: KubeClient, namespace: str) -> AsyncIterator[Services]:
    running = Services(bus, kube, namespace)
    yield running
    await running.stop()


@pytest.fixture
async def inbox(bus: Bus) -> AsyncIterator[Inbox]:
    box = Inbox(bus)
    yield box
    await box.close()


def workspace(name: str, preset: str, instance_type: str | None) -> dict[str, Any]:
    doc = seed("inference")
    doc["metadata"]["name"] = name
    doc["inference"]["preset"]["name"] = preset
    if instance_type is None:
        del doc["resource"]["instanceType"]
    else:
        doc["resource"]["instanceType"] = instance_type
    return doc


def in_namespace(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    doc["metadata"]["namespace"] = namespace
    return doc


async def planned(
    kube: KubeClient, namespace: str, name: str, timeout: float = 15.0, **expect: str
) -> dict[str, Any]:
    """The Workspace once its Planned condition matches `expect` (status, reason, ...)."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = await kube.get(resources.WORKSPACES, name, namespace=namespace)
        conditions = (obj.get("status") or {}).get("conditions") or []
        last = next((c for c in conditions if c["type"] == "Planned"), {})
        if last and all(last.get(k) == v for k, v in expect.items()):
            return obj
        await asyncio.sleep(0.1)
    raise AssertionError(f"Planned never became {expect}; last: {last}")


async def test_the_seed_is_planned_within_seconds_of_apply(
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    services: Services,
    inbox: Inbox,
) -> None:
    started = time.monotonic()
    cluster.apply(in_namespace(seed("inference"), namespace))
    obj = await planned(kube, namespace, "workspace-phi-3-mini", status="True")
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"planned after {elapsed:.1f}s"
    plan = obj["status"]["plan"]
    assert (plan["instanceType"], plan["nodeCount"], plan["dtype"]) == (
        "Standard_NC6s_v3",
        1,
        "float16",
    )
    assert plan["maxModelLen"] == 4096
    assert plan["estimatedCostPerHour"] == "3.06"
    assert obj["status"]["targetNodeCount"] == 1
    event = await inbox.wait_for(lambda e: isinstance(e, PlanCreated))
    assert isinstance(event, PlanCreated)
    assert (event.instance_type, event.node_count) == ("Standard_NC6s_v3", 1)
    shown = cluster.kubectl("get", "workspace", "-n", namespace).stdout
    assert "Standard_NC6s_v3" in shown


async def test_a_model_too_big_for_the_named_sku_names_the_shortfall(
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    services: Services,
    inbox: Inbox,
) -> None:
    doc = workspace("llama-on-v100", "llama-3.3-70b-instruct", "Standard_NC6s_v3")
    doc["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    cluster.apply(in_namespace(doc, namespace))
    obj = await planned(kube, namespace, "llama-on-v100", status="False")
    condition = next(c for c in obj["status"]["conditions"] if c["type"] == "Planned")
    assert condition["reason"] == "InsufficientGPUMemory"
    assert "llama-3.3-70b-instruct needs 132.0 GiB" in condition["message"]
    assert "12.1 GiB" in condition["message"]
    assert "11 nodes" in condition["message"]
    assert "plan" not in obj["status"]
    await asyncio.sleep(1)
    assert not any(isinstance(e, PlanCreated) for e in inbox.events)


async def test_a_replan_skips_the_refused_sku_and_remembers_it(
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    bus: Bus,
    services: Services,
) -> None:
    cluster.apply(in_namespace(workspace("auto", "phi-3-mini-4k-instruct", None), namespace))
    obj = await planned(kube, namespace, "auto", status="True")
    assert obj["status"]["plan"]["instanceType"] == "Standard_NC4as_T4_v3"
    meta = obj["metadata"]
    ref = WorkspaceRef(
        namespace=namespace,
        name="auto",
        uid=meta["uid"],
        generation=meta["generation"],
        resource_version=meta["resourceVersion"],
    )
    # Whoever can publish this event could name SKUs that do not exist and send a megabyte of
    # "reason": only known SKUs and one bounded line reach the status.
    await bus.publish(
        ReplanRequested(
            workspace=ref,
            excluded_instance_types=["Standard_NC4as_T4_v3", "Made_Up_" + "x" * 300],
            reason="QuotaExceeded: Operation could not be completed as it results in exceeding "
            "approved standardNCASv3_T4 Family Cores quota\n" + "y" * 100_000,
        )
    )
    deadline = time.monotonic() + 15
    while obj["status"]["plan"]["instanceType"] == "Standard_NC4as_T4_v3":
        assert time.monotonic() < deadline, "never re-planned"
        await asyncio.sleep(0.1)
        obj = await kube.get(resources.WORKSPACES, "auto", namespace=namespace)
    plan = obj["status"]["plan"]
    assert plan["instanceType"] == "Standard_NC8as_T4_v3"  # next cheapest: $0.752/h
    assert plan["excludedInstanceTypes"] == ["Standard_NC4as_T4_v3"]
    assert len(plan["replanReason"]) <= 512
    assert "\n" not in plan["replanReason"]
    condition = next(c for c in obj["status"]["conditions"] if c["type"] == "Planned")
    assert "re-planned after: QuotaExceeded" in condition["message"]
    # A later observation of the same Workspace does not bring the refused SKU back.
    await bus.publish(WorkspaceObserved(workspace=ref.model_copy(update={"resource_version": "x"})))
    await asyncio.sleep(1.5)
    obj = await kube.get(resources.WORKSPACES, "auto", namespace=namespace)
    assert obj["status"]["plan"]["instanceType"] == "Standard_NC8as_T4_v3"


async def test_a_malformed_event_is_dead_lettered_and_the_planner_keeps_serving(
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    bus: Bus,
    services: Services,
) -> None:
    subject = bus.stream.subjects.of_event(WorkspaceObserved, namespace, "broken")
    await bus.publish_raw(subject, b'{"schema_version": 1, "workspace": 42', headers={})
    cluster.apply(in_namespace(seed("inference"), namespace))
    await planned(kube, namespace, "workspace-phi-3-mini", status="True")
    letters = await dead_letters(bus)
    assert [s for s, _, _ in letters] == [
        bus.stream.subjects.dead_letter(PlannerSettings().service_name, subject)
    ]
