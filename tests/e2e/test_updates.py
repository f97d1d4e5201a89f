"""A spec change of a serving single-node Workspace completes without downtime, on one node.

The old pod holds its node's GPU, so the provisioner adds a spare node of the planned SKU for the
update (a second NodeClaim, real Karpenter), the deployer's Deployment starts the new pod there
and stops the old one once the new one is ready, and the provisioner then frees the old node.
Watched all along: at every sample at least one ready pod serves, and the Service's own
EndpointSlice holds a ready endpoint.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from kairyu_core.kube import KubeClient, resources
from kairyu_localenv import LocalCluster
from kairyu_testing.seeds import seed
from kairyu_testing.stack import ServiceStack
from kairyu_testing.workspaces import is_true, until

pytestmark = pytest.mark.e2e
NAME = "workspace-phi-3-mini"


def _ready(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


class Serving:
    """Samples, until stopped, how many ready pods and ready endpoints the Workspace has."""

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.samples: list[tuple[int, int]] = []
        self.messages: set[str] = set()
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        while not self.stopped.is_set():
            pods = await self.kube.list(
                resources.PODS,
                namespace=self.namespace,
                label_selector=f"kaito.sh/workspace={NAME}",
            )
            ready_pods = sum(
                1 for p in pods["items"] if not p["metadata"].get("deletionTimestamp") and _ready(p)
            )
            slices = await self.kube.list(
                resources.ENDPOINTSLICES,
                namespace=self.namespace,
                label_selector=f"kubernetes.io/service-name={NAME}",
            )
            endpoints = sum(
                1
                for s in slices["items"]
                for e in s.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready")
            )
            self.samples.append((ready_pods, endpoints))
            found = await self.kube.get(resources.WORKSPACES, NAME, namespace=self.namespace)
            for c in found.get("status", {}).get("conditions", []):
                if c["type"] == "ResourceReady":
                    self.messages.add(c.get("message", ""))
            await asyncio.sleep(0.2)


@pytest.mark.timeout(300)
async def test_a_preset_change_of_a_serving_workspace_keeps_serving_and_ends_on_one_node(
    cluster: LocalCluster, namespace: str, kube: KubeClient, hub_system: ServiceStack
) -> None:
    doc = seed("inference")
    doc["metadata"]["namespace"] = namespace
    await asyncio.to_thread(cluster.apply, doc)
    before = await until(
        kube, namespace, NAME, is_true("WorkspaceReady"), what="WorkspaceReady", timeout=120
    )
    (old_node,) = before["status"]["workerNodes"]

    serving = Serving(kube, namespace)
    sampler = asyncio.create_task(serving.run())
    try:
        await asyncio.sleep(1)  # samples of the steady state first
        patch = {"inference": {"preset": {"name": "phi-3-mini-128k-instruct"}}}
        await asyncio.to_thread(
            cluster.kubectl,
            "patch",
            "workspace.v1alpha1.kaito.sh",
            NAME,
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps(patch),
        )
        generation = before["metadata"]["generation"] + 1

        def updated(obj: dict[str, Any]) -> bool:
            nodes = (obj.get("status") or {}).get("workerNodes") or []
            return (
                any(
                    c["type"] == "InferenceReady"
                    and c["status"] == "True"
                    and c.get("observedGeneration") == generation
                    for c in (obj.get("status") or {}).get("conditions") or []
                )
                and len(nodes) == 1
                and nodes != [old_node]
            )

        after = await until(kube, namespace, NAME, updated, what="updated on one node", timeout=180)
        (new_node,) = after["status"]["workerNodes"]
        for _ in range(120):  # the old node goes
            nodes = await kube.list(
                resources.NODES,
                label_selector=f"kaito.sh/workspace={NAME},kaito.sh/workspacenamespace={namespace}",
            )
            names = {n["metadata"]["name"] for n in nodes["items"]}
            if names == {new_node}:
                break
            await asyncio.sleep(0.5)
        assert names == {new_node}
    finally:
        serving.stopped.set()
        await sampler

    # It served throughout: a ready pod, and a ready endpoint behind its Service, every sample.
    assert serving.samples, "nothing was sampled"
    assert min(p for p, _ in serving.samples) >= 1, serving.samples
    assert min(e for _, e in serving.samples) >= 1, serving.samples
    # The update went through a spare node, and ResourceReady said so.
    assert any("a spare node for the update" in m for m in serving.messages), serving.messages
    pods = await kube.list(
        resources.PODS, namespace=namespace, label_selector=f"kaito.sh/workspace={NAME}"
    )
    live = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
    assert [p["spec"]["nodeName"] for p in live] == [new_node]
    claims = await kube.list(
        resources.NODECLAIMS, label_selector=f"kaito.sh/workspacenamespace={namespace}"
    )
    assert len([c for c in claims["items"] if not c["metadata"].get("deletionTimestamp")]) == 1
