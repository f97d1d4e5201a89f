"""The whole system: the three seed manifests through all five services over NATS, one trace each.

Watcher, planner, provisioner (real Karpenter), deployer and tuner run in this process against the
real apiserver and nats-server, as `make dev` runs them; kwok plays the kubelet. Each Workspace
must reach its final state, and every span that names it must sit in the one trace its rollout
started (its ids derived from the Workspace's uid and generation), with spans from every service
that handled it and the rollout's own root and outcome.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rollout_stack import rollout_stack

from kairyu_core.bus import Bus
from kairyu_core.kube import KubeClient
from kairyu_localenv import LocalCluster
from kairyu_testing.seeds import seed
from kairyu_testing.stack import ServiceStack
from kairyu_testing.workspaces import is_true, until, workspace_of_span

pytestmark = pytest.mark.e2e

# Instrumentation scopes: which service a span comes from. (No bus spans are expected: the
# services hand off through the Workspace's status in their views, and consume no events.)
ROLLOUT = (
    "kairyu.rollout"  # the root (recorded by the planner) and the outcome (by the last writer)
)
PLANNER, PROVISIONER = "kairyu.planner", "kairyu.provisioner"
DEPLOYER, TUNER = "kairyu.deployer", "kairyu.tuner"


@pytest.fixture
async def system(
    karpenter: object, bus: Bus, kube: KubeClient, namespace: str
) -> AsyncIterator[ServiceStack]:
    stack = await rollout_stack(bus, kube, namespace)
    yield stack
    await stack.stop()


def _named(kind: str, name: str, namespace: str) -> dict[str, Any]:
    doc = seed(kind)
    doc["metadata"] = {"name": name, "namespace": namespace}
    return doc


async def test_the_three_seeds_reach_their_final_states_in_one_trace_each(
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    system: ServiceStack,
    spans: InMemorySpanExporter,
) -> None:
    rollouts = {
        "inference": ("Ready", {ROLLOUT, PLANNER, PROVISIONER, DEPLOYER}),
        "tuning": ("Succeeded", {ROLLOUT, PLANNER, PROVISIONER, TUNER}),
        "adapter": ("Ready", {ROLLOUT, PLANNER, PROVISIONER, DEPLOYER}),
    }
    for kind in rollouts:
        await asyncio.to_thread(cluster.apply, _named(kind, f"seed-{kind}", namespace))
    for kind, (state, _) in rollouts.items():
        done = await until(
            kube, namespace, f"seed-{kind}", is_true("WorkspaceReady"), what=kind, timeout=90
        )
        assert done["status"]["state"] == state

    traces: dict[str, set[int]] = defaultdict(set)
    span_names: list[tuple[str, int]] = []
    scopes: dict[int, set[str]] = defaultdict(set)
    for span in spans.get_finished_spans():
        assert span.context is not None
        scopes[span.context.trace_id].add(
            span.instrumentation_scope.name if span.instrumentation_scope else ""
        )
        span_names.append((span.name, span.context.trace_id))
        if (key := workspace_of_span(dict(span.attributes or {}))) is not None:
            traces[key].add(span.context.trace_id)
    for kind, (_, services) in rollouts.items():
        found = traces[f"{namespace}/seed-{kind}"]
        assert len(found) == 1, f"{kind}: its spans are in {len(found)} traces"
        (trace_id,) = found
        assert services <= scopes[trace_id], (
            f"{kind}: {sorted(services - scopes[trace_id])} missing"
        )


async def test_a_rollout_keeps_its_one_trace_when_every_service_restarts_mid_way(
    *,
    cluster: LocalCluster,
    karpenter: object,
    namespace: str,
    bus: Bus,
    kube: KubeClient,
    spans: InMemorySpanExporter,
) -> None:
    # First life: no deployer yet, so the rollout stops half way, with its nodes ready.
    first = await rollout_stack(bus, kube, namespace, deployer=False, tuner=False)
    try:
        await asyncio.to_thread(cluster.apply, _named("inference", "restarted", namespace))
        await until(
            kube, namespace, "restarted", is_true("ResourceReady"), what="nodes", timeout=60
        )
    finally:
        await first.stop()
    before = {s.context.trace_id for s in spans.get_finished_spans() if s.context is not None}

    # Second life: fresh instances of every service, with nothing in memory from the first.
    second = await rollout_stack(bus, kube, namespace)
    try:
        done = await until(
            kube, namespace, "restarted", is_true("WorkspaceReady"), what="ready", timeout=60
        )
    finally:
        await second.stop()
    assert done["status"]["state"] == "Ready"

    traces = {
        span.context.trace_id
        for span in spans.get_finished_spans()
        if span.context is not None
        and workspace_of_span(dict(span.attributes or {})) == f"{namespace}/restarted"
    }
    assert len(traces) == 1, f"the rollout's spans are in {len(traces)} traces"
    (trace_id,) = traces
    assert trace_id in before, "the second life started a new trace"
    in_trace = [
        s for s in spans.get_finished_spans() if s.context and s.context.trace_id == trace_id
    ]
    assert "ready" in {s.name for s in in_trace}
    services = {s.instrumentation_scope.name for s in in_trace if s.instrumentation_scope}
    assert {ROLLOUT, PLANNER, PROVISIONER, DEPLOYER} <= services
