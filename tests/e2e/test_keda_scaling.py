"""Real KEDA scales an InferenceSet through its scale subresource, down to zero GPU nodes and back.

KEDA's operator and metrics server run against the local control plane (the external metrics API
served through the apiserver's aggregation layer, asked by kube-controller-manager's HPA
controller), and a ScaledObject targets the InferenceSet. The load is a metric served here over
HTTP (KEDA's metrics-api scaler), raised and lowered by the test; every replica is a Workspace
with a GPU node of its own (a NodeClaim, through Karpenter).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from kairyu_core.kube import KubeClient, resources
from kairyu_core.localenv import LocalCluster

pytestmark = pytest.mark.e2e


class Load:
    """A queue length served as JSON at `url`, as a load source would report it."""

    def __init__(self) -> None:
        self.waiting = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def metric(request: web.Request) -> web.Response:
            return web.json_response({"waiting": self.waiting})

        app = web.Application()
        app.router.add_get("/load", metric)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/load"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def load() -> AsyncIterator[Load]:
    source = Load()
    await source.start()
    yield source
    await source.stop()


def _scaled_object(name: str, namespace: str, url: str) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "kaito.sh/v1beta1",
                "kind": "InferenceSet",
                "name": name,
            },
            "minReplicaCount": 0,
            "maxReplicaCount": 3,
            "pollingInterval": 1,
            "cooldownPeriod": 5,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleUp": {"stabilizationWindowSeconds": 0},
                        "scaleDown": {"stabilizationWindowSeconds": 0},
                    }
                }
            },
            "triggers": [
                {
                    "type": "metrics-api",
                    "metadata": {
                        "url": url,
                        "valueLocation": "waiting",
                        "targetValue": "1",
                        "activationTargetValue": "0",
                    },
                }
            ],
        },
    }


async def _until(
    kube: KubeClient, namespace: str, name: str, *, replicas: int, claims: int, timeout: float = 120
) -> None:
    """Until the set asks for `replicas` and the namespace's Workspaces hold `claims` NodeClaims."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: tuple[Any, int] = (None, -1)
    while loop.time() < deadline:
        found = await kube.get(resources.INFERENCESETS, name, namespace=namespace)
        selector = f"kaito.sh/workspacenamespace={namespace}"
        held = (await kube.list(resources.NODECLAIMS, label_selector=selector))["items"]
        live = [c for c in held if not c["metadata"].get("deletionTimestamp")]
        seen = (found["spec"].get("replicas"), len(live) if claims else len(held))
        if seen == (replicas, claims):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{name}: (replicas, NodeClaims) {seen}, not {(replicas, claims)}")


@pytest.mark.timeout(420)
@pytest.mark.usefixtures("hub_system", "keda")
async def test_keda_scales_an_inference_set_with_the_load_to_zero_gpu_nodes_and_back(
    cluster: LocalCluster, namespace: str, kube: KubeClient, load: Load
) -> None:
    inference_set = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "metadata": {"name": "busy", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "labelSelector": {"matchLabels": {"apps": "busy"}},
            "template": {"inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}},
        },
    }
    await asyncio.to_thread(cluster.apply, inference_set)
    await _until(kube, namespace, "busy", replicas=1, claims=1)
    load.waiting = 3  # three requests queued, one per replica wanted
    await asyncio.to_thread(cluster.apply, _scaled_object("busy", namespace, load.url))
    await _until(kube, namespace, "busy", replicas=3, claims=3)
    # Above one replica it is the HPA KEDA made, reading the metric through the apiserver.
    hpa = json.loads(
        (
            await asyncio.to_thread(
                cluster.kubectl, "get", "hpa", "keda-hpa-busy", "-n", namespace, "-o", "json"
            )
        ).stdout
    )
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "InferenceSet"
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["External"]
    (read,) = hpa["status"]["currentMetrics"]  # the HPA controller got the value: the API works
    assert read["type"] == "External"
    assert read["external"]["metric"]["name"].endswith("metric-api-waiting")

    load.waiting = 0  # idle: KEDA deactivates the set after its cooldown, every GPU node goes
    await _until(kube, namespace, "busy", replicas=0, claims=0)

    load.waiting = 1  # a request again: back from zero
    await _until(kube, namespace, "busy", replicas=1, claims=1)

    # Without its ScaledObject the set is left alone: KEDA removes the HPA it made (and stops
    # polling the load source before it goes away).
    await asyncio.to_thread(
        cluster.kubectl, "delete", "scaledobject", "busy", "-n", namespace, "--wait=true"
    )
    for _ in range(120):
        gone = await asyncio.to_thread(
            cluster.kubectl, "get", "hpa", "keda-hpa-busy", "-n", namespace, check=False
        )
        if gone.returncode != 0:
            break
        await asyncio.sleep(0.5)
    assert gone.returncode != 0, "KEDA left its HPA behind"
