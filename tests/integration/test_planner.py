"""The planner against the real cluster and nats-server: plans, refusals, re-plan requests."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kairyu_contracts.catalog import load_catalog
from kairyu_core.bus import Bus
from kairyu_core.kube import KubeClient, apply_status, errors, resources
from kairyu_localenv import LocalCluster
from kairyu_planner.app import Planner, followed
from kairyu_planner.settings import PlannerSettings
from kairyu_testing.seeds import seed
from kairyu_testing.stack import ServiceStack
from kairyu_watcher.app import Watcher
from kairyu_watcher.settings import WatcherSettings


@pytest.fixture
async def services(bus: Bus, kube: KubeClient, namespace: str) -> AsyncIterator[ServiceStack]:
    """The watcher and the planner (its view and controller), running on the test's stream."""
    stack = ServiceStack(bus)
    settings = PlannerSettings()
    catalog = load_catalog()
    stack.run(
        Watcher(
            settings=WatcherSettings(namespace=namespace, resync_interval_s=3600),
            bus=bus,
            kube=kube,
        ).run()
    )
    stack.control(
        service=settings.service_name,
        kinds=followed(settings.planning),
        reconcile=lambda view: (
            Planner(settings=settings, kube=kube, view=view, catalog=catalog).reconcile
        ),
    )
    yield stack
    await stack.stop()


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
    services: ServiceStack,
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
    assert len(plan["digest"]) == 16  # the hand-off: the provisioner sees it in its view
    shown = cluster.kubectl("get", "workspace", "-n", namespace).stdout
    assert "Standard_NC6s_v3" in shown


async def test_a_model_too_big_for_the_named_sku_names_the_shortfall(
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    services: ServiceStack,
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


async def request_replan(
    kube: KubeClient, namespace: str, name: str, *, digest: str, sku: str, reason: str
) -> None:
    """Write status.replanRequest as the provisioner does (its own field manager)."""
    await apply_status(
        kube,
        namespace=namespace,
        name=name,
        field_manager="kairyu-provisioner",
        status={"replanRequest": {"planDigest": digest, "instanceType": sku, "reason": reason}},
    )


async def test_a_replan_request_skips_the_refused_sku_and_remembers_it(
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    services: ServiceStack,
) -> None:
    cluster.apply(in_namespace(workspace("auto", "phi-3-mini-4k-instruct", None), namespace))
    obj = await planned(kube, namespace, "auto", status="True")
    first = obj["status"]["plan"]
    assert first["instanceType"] == "Standard_NC4as_T4_v3"
    # Whoever can write the status could name a SKU that does not exist, or another than the
    # plan's: neither is about the current plan, so neither is acted on. The CRD bounds both.
    await request_replan(
        kube, namespace, "auto", digest=first["digest"], sku="Made_Up_SKU", reason="no"
    )
    with pytest.raises(errors.InvalidError, match="replanRequest"):
        await request_replan(
            kube, namespace, "auto", digest=first["digest"], sku="x" * 300, reason="no"
        )
    await asyncio.sleep(1.5)
    obj = await kube.get(resources.WORKSPACES, "auto", namespace=namespace)
    assert obj["status"]["plan"] == first
    # The cloud's refusal of the plan's own SKU: a bounded one-line reason reaches the status.
    await request_replan(
        kube,
        namespace,
        "auto",
        digest=first["digest"],
        sku="Standard_NC4as_T4_v3",
        reason="QuotaExceeded: Operation could not be completed as it results in exceeding "
        "approved standardNCASv3_T4 Family Cores quota\n" + "y" * 900,
    )
    deadline = time.monotonic() + 15
    while obj["status"]["plan"]["instanceType"] == "Standard_NC4as_T4_v3":
        assert time.monotonic() < deadline, "never re-planned"
        await asyncio.sleep(0.1)
        obj = await kube.get(resources.WORKSPACES, "auto", namespace=namespace)
    plan = obj["status"]["plan"]
    assert plan["instanceType"] == "Standard_NC8as_T4_v3"  # next cheapest: $0.752/h
    assert plan["excludedInstanceTypes"] == ["Standard_NC4as_T4_v3"]
    assert plan["digest"] != first["digest"]  # the request is stale by construction
    assert len(plan["replanReason"]) <= 512
    assert "\n" not in plan["replanReason"]
    condition = next(c for c in obj["status"]["conditions"] if c["type"] == "Planned")
    assert "re-planned after: QuotaExceeded" in condition["message"]
    # A request about the earlier plan is answered already: it changes nothing, and neither
    # does a later change of the Workspace bring the refused SKU back.
    await request_replan(
        kube, namespace, "auto", digest=first["digest"], sku="Standard_NC8as_T4_v3", reason="old"
    )
    cluster.kubectl("label", "workspace", "auto", "-n", namespace, "touched=yes")
    await asyncio.sleep(1.5)
    obj = await kube.get(resources.WORKSPACES, "auto", namespace=namespace)
    assert obj["status"]["plan"] == plan
