"""Chaos: Workspaces roll out while every service is SIGKILLed again and again, NATS and the
apiserver restart; afterwards every Workspace is Ready, none has more NodeClaims than its plan,
and deleting them all leaves no NodeClaim, GPU node or workload behind.

The five services run as their own processes, as `make dev` runs them, against the session's
control plane and real Karpenter, with a NATS of the test's own (it is restarted). The size is
`KAIRYU_CHAOS_WORKSPACES` (8 in `make test`, 30 in `make chaos`); the figures (actions taken,
time to converge, duplicates, orphans) are printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from kairyu_core.kube import KubeClient, errors, resources
from kairyu_localenv import LocalCluster, LocalNats
from kairyu_localenv.__main__ import start_services
from kairyu_localenv.processes import ManagedProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SIZE = int(os.environ.get("KAIRYU_CHAOS_WORKSPACES", "8"))
CHAOS_S = float(os.environ.get("KAIRYU_CHAOS_SECONDS", "45"))
CONVERGE_S = 300.0
SELECTOR_LABEL = "chaos.kairyu.io/ws"


@dataclass
class Figures:
    kills: dict[str, int] = field(default_factory=dict)
    nats_restarts: int = 0
    apiserver_restarts: int = 0
    most_claims: dict[str, int] = field(default_factory=dict)
    converged_s: float = 0.0
    deleted_s: float = 0.0
    orphans: list[str] = field(default_factory=list)

    def report(self) -> str:
        duplicates = sum(max(0, n - 1) for n in self.most_claims.values())
        return (
            f"chaos: {SIZE} Workspaces; SIGKILLs {sum(self.kills.values())} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.kills.items()))}), "
            f"NATS restarts {self.nats_restarts}, apiserver restarts {self.apiserver_restarts}; "
            f"all Ready {self.converged_s:.1f} s after the last action; "
            f"duplicate NodeClaims {duplicates}; all gone {self.deleted_s:.1f} s after delete; "
            f"orphans {len(self.orphans)}"
        )


def workspace(namespace: str, index: int) -> dict[str, Any]:
    name = f"chaos-{index:03d}"
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": namespace},
        "resource": {
            "instanceType": "Standard_NC6s_v3",
            "labelSelector": {"matchLabels": {SELECTOR_LABEL: name}},
        },
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[LocalNats]:
    (tmp_path / "nats").mkdir()
    with LocalNats(workdir=tmp_path / "nats") as server:
        yield server


def _ready(obj: dict[str, Any]) -> bool:
    generation = obj["metadata"].get("generation")
    return any(
        c.get("type") == "WorkspaceReady"
        and c.get("status") == "True"
        and c.get("observedGeneration", generation) == generation
        for c in (obj.get("status") or {}).get("conditions") or []
    )


async def _list(kube: KubeClient, resource: resources.Resource, **kwargs: Any) -> dict[str, Any]:
    """List, retrying while the restarted apiserver is still warming up.

    A restarted apiserver answers /readyz before every custom resource is served again: for a
    few seconds a LIST of Workspaces gets 429 "storage is (re)initializing". The services retry
    that; the test's own polls must too, or they fail on the chaos they are there to observe.
    """
    for _ in range(60):
        try:
            return await kube.list(resource, **kwargs)
        except errors.UnavailableError:
            await asyncio.sleep(1.0)
    return await kube.list(resource, **kwargs)


async def _claims_per_workspace(kube: KubeClient, namespace: str) -> dict[str, int]:
    listed = await _list(
        kube, resources.NODECLAIMS, label_selector=f"kaito.sh/workspacenamespace={namespace}"
    )
    counts: dict[str, int] = {}
    for claim in listed.get("items") or []:
        name = claim["metadata"]["labels"].get("kaito.sh/workspace", "")
        counts[name] = counts.get(name, 0) + 1
    return counts


async def _left_behind(kube: KubeClient, namespace: str) -> list[str]:
    left: list[str] = []
    by_namespace = f"kaito.sh/workspacenamespace={namespace}"
    for resource, selector, ns in (
        (resources.NODECLAIMS, by_namespace, None),
        (resources.NODES, by_namespace, None),
        (resources.DEPLOYMENTS, "kaito.sh/workspace", namespace),
        (resources.STATEFULSETS, "kaito.sh/workspace", namespace),
        (resources.WORKSPACES, None, namespace),
    ):
        listed = await _list(kube, resource, namespace=ns, label_selector=selector)
        left += [f"{resource.kind} {i['metadata']['name']}" for i in listed.get("items") or []]
    return left


async def _wait(kube: KubeClient, namespace: str, figures: Figures, until: float) -> set[str]:
    """Poll until every Workspace is Ready (or `until`); record the most NodeClaims seen."""
    while True:
        listed = await _list(kube, resources.WORKSPACES, namespace=namespace)
        items = listed.get("items") or []
        ready = {i["metadata"]["name"] for i in items if _ready(i)}
        for name, count in (await _claims_per_workspace(kube, namespace)).items():
            figures.most_claims[name] = max(figures.most_claims.get(name, 0), count)
        if len(ready) == SIZE or time.monotonic() > until:
            return ready
        await asyncio.sleep(1.0)


@pytest.mark.usefixtures("karpenter")
async def test_rollouts_survive_killed_services_and_restarted_nats_and_apiserver(
    cluster: LocalCluster,
    nats: LocalNats,
    kube: KubeClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    env = {
        "KAIRYU_NAMESPACE": namespace,
        "KAIRYU_BACKEND": "karpenter",
        "KAIRYU_PROVISIONING__CHECK_INTERVAL_S": "5",
    }
    extra = {svc: dict(env) for svc in ("watcher", "provisioner", "deployer", "tuner")}
    extra["planner"] = {}
    services: list[ManagedProcess] = start_services(cluster, nats, extra)
    figures = Figures()
    rng = random.Random(15)
    try:
        manifest = tmp_path / "workspaces.yaml"
        manifest.write_text(yaml.safe_dump_all([workspace(namespace, i) for i in range(SIZE)]))
        cluster.kubectl("apply", "-f", str(manifest))

        # ------------------------------------------------------------------ chaos
        started = time.monotonic()
        restarted_apiserver = False
        nats_restarts_planned = 2
        while time.monotonic() - started < CHAOS_S:
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            roll = rng.random()
            if roll < 0.08 and nats_restarts_planned:
                nats_restarts_planned -= 1
                nats.restart()  # from this thread: processes die with the thread that starts them
                figures.nats_restarts += 1
            elif roll < 0.12 and not restarted_apiserver:
                restarted_apiserver = True
                cluster.restart_apiserver(down_for=2.0)
                figures.apiserver_restarts += 1
            else:
                victim = rng.choice(services)
                victim.kill()
                figures.kills[victim.name] = figures.kills.get(victim.name, 0) + 1
                await asyncio.sleep(rng.uniform(0.0, 1.5))
                victim.start()
        if not figures.nats_restarts:
            nats.restart()  # from this thread: processes die with the thread that starts them
            figures.nats_restarts += 1
        if not restarted_apiserver:
            cluster.restart_apiserver(down_for=2.0)
            figures.apiserver_restarts += 1
        calm = time.monotonic()

        # ------------------------------------------------------------------ convergence
        ready = await _wait(kube, namespace, figures, calm + CONVERGE_S)
        figures.converged_s = time.monotonic() - calm
        if len(ready) < SIZE:
            listed = await _list(kube, resources.WORKSPACES, namespace=namespace)
            stuck = [
                {i["metadata"]["name"]: (i.get("status") or {}).get("conditions")}
                for i in listed.get("items") or []
                if not _ready(i)
            ][:3]
            logs = {s.name: s.log_tail(15) for s in services}
            pytest.fail(
                f"{SIZE - len(ready)} Workspaces not Ready: {json.dumps(stuck)[:3000]}\n"
                + "\n".join(f"--- {k}\n{v}" for k, v in logs.items())
            )
        over = {name: n for name, n in figures.most_claims.items() if n > 1}
        assert not over, f"more NodeClaims than the plan's one node: {over}"

        # ------------------------------------------------------------------ deletion
        deleting = time.monotonic()
        cluster.kubectl("delete", "workspaces", "--all", "-n", namespace, "--wait=false")
        deadline = deleting + CONVERGE_S
        while True:
            figures.orphans = await _left_behind(kube, namespace)
            if not figures.orphans or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        figures.deleted_s = time.monotonic() - deleting
        print(figures.report())  # noqa: T201 - the figures are the point of `make chaos`
        assert not figures.orphans, f"left behind: {figures.orphans[:20]}"
    finally:
        for service in services:
            service.stop()
