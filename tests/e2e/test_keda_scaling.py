"""An annotated InferenceSet scales on its pods' load with real KEDA, to zero GPU nodes and back.

All of kairyu runs (watcher, planner, provisioner with real Karpenter, deployer, activator) with
KEDA's operator and metrics server on the local control plane (the external metrics API through
the apiserver's aggregation layer, asked by kube-controller-manager's HPA controller). The set
carries KAITO's autoscaling annotations and kairyu's minimum of zero; kairyu makes its
ScaledObject, whose trigger reads the set's load from the activator.

kwok's pods run no process, so stand-ins serve vLLM's `/metrics` in the pods' place: the
activator asks them exactly as it asks a pod (`address_of` maps a pod's IP to its stand-in).
That is the only fake; KEDA, the HPA, Karpenter's NodeClaims and the EndpointSlices are real.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rollout_stack import rollout_stack, start_activator

from kairyu_activator.settings import ActivatorHttpSettings
from kairyu_core.bus import Bus
from kairyu_core.kube import KubeClient, errors, resources
from kairyu_localenv import LocalCluster
from kairyu_localenv.keda import host_address
from kairyu_localenv.processes import free_port
from kairyu_testing.fakehub import FakeHub
from kairyu_testing.stack import ServiceStack

pytestmark = pytest.mark.e2e


class PodStandIns:
    """vLLM's /metrics for every pod, each reporting `waiting` requests queued."""

    def __init__(self) -> None:
        self.waiting = 0
        self.base = ""
        self._runner: web.AppRunner | None = None

    def url_of(self, ip: str) -> str:
        return f"{self.base}/pods/{ip}"

    async def start(self) -> None:
        async def metrics(request: web.Request) -> web.Response:
            text = (
                "# TYPE vllm:num_requests_waiting gauge\n"
                f'vllm:num_requests_waiting{{model_name="busy"}} {float(self.waiting)}\n'
            )
            return web.Response(text=text, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/pods/{ip}/metrics", metrics)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def pods() -> AsyncIterator[PodStandIns]:
    stand_ins = PodStandIns()
    await stand_ins.start()
    yield stand_ins
    await stand_ins.stop()


@pytest.fixture
async def scaling_system(
    bus: Bus,
    kube: KubeClient,
    namespace: str,
    *,
    hub: FakeHub,
    pods: PodStandIns,
    karpenter: object,
    keda: object,
) -> AsyncIterator[tuple[ServiceStack, ActivatorHttpSettings]]:
    """kairyu's services and the activator, whose data port is at this machine's address."""
    settings = ActivatorHttpSettings(
        host="0.0.0.0",  # KEDA reads 127.0.0.1, the set's Service this machine's address
        load_port=free_port(),
        port=free_port(),
        address=host_address(),
        retry_after_s=20,
    )
    stack = await rollout_stack(
        bus,
        kube,
        namespace,
        tuner=False,
        hub_endpoint=hub.endpoint,
        activator_url=f"http://127.0.0.1:{settings.load_port}",
    )
    start_activator(stack, kube=kube, settings=settings, address_of=pods.url_of)
    yield stack, settings
    await stack.stop()


def _annotated_set(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "metadata": {
            "name": "busy",
            "namespace": namespace,
            "annotations": {
                # KAITO's contract, as KAITO's users write it ...
                "scaledobject.kaito.sh/auto-provision": "true",
                "scaledobject.kaito.sh/max-replicas": "3",
                "scaledobject.kaito.sh/metricName": "vllm:num_requests_waiting",
                "scaledobject.kaito.sh/threshold": "1",
                # ... and kairyu's: down to zero, after 5 idle seconds, read every second.
                "scaledobject.kairyu.io/min-replicas": "0",
                "scaledobject.kairyu.io/cooldown-seconds": "5",
                "scaledobject.kairyu.io/polling-seconds": "1",
                # Not to zero before its first pod served (it has no load until then).
                "scaledobject.kairyu.io/initial-cooldown-seconds": "120",
            },
        },
        "spec": {
            "replicas": 1,
            "labelSelector": {"matchLabels": {"apps": "busy"}},
            "template": {"inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}},
        },
    }


async def _state(kube: KubeClient, namespace: str, *, all_claims: bool) -> tuple[Any, int, int]:
    """(the set's replicas, NodeClaims (live ones, or all), ready pods of the set)."""
    found = await kube.get(resources.INFERENCESETS, "busy", namespace=namespace)
    selector = f"kaito.sh/workspacenamespace={namespace}"
    held = (await kube.list(resources.NODECLAIMS, label_selector=selector))["items"]
    live = [c for c in held if not c["metadata"].get("deletionTimestamp")]
    pods = await kube.list(
        resources.PODS, namespace=namespace, label_selector="inferenceset.kaito.sh/created-by=busy"
    )
    ready = [
        p
        for p in pods["items"]
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions", [])
        )
    ]
    return found["spec"].get("replicas"), len(held if all_claims else live), len(ready)


async def _until(
    kube: KubeClient, namespace: str, want: tuple[int, int, int], timeout: float = 150
) -> float:
    """Until (replicas, NodeClaims, ready pods) is `want` (NodeClaims: all gone for 0)."""
    start = time.monotonic()
    seen: tuple[Any, int, int] = (None, -1, -1)
    while time.monotonic() - start < timeout:
        seen = await _state(kube, namespace, all_claims=want[1] == 0)
        if seen == want:
            return time.monotonic() - start
        await asyncio.sleep(0.5)
    raise AssertionError(f"busy: (replicas, NodeClaims, ready pods) {seen}, not {want}")


async def _until_hpa(cluster: LocalCluster, namespace: str, *, current: int, desired: int) -> None:
    """Until KEDA's HPA has synced at `current` replicas and wants `desired`."""
    seen: tuple[Any, Any] = (None, None)
    for _ in range(60):
        read = await asyncio.to_thread(
            cluster.kubectl, "get", "hpa", "keda-hpa-busy", "-n", namespace, "-o", "json"
        )
        status = json.loads(read.stdout).get("status", {})
        seen = (status.get("currentReplicas"), status.get("desiredReplicas"))
        if seen == (current, desired):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(
        f"keda-hpa-busy: (current, desired) replicas {seen}, not {(current, desired)}"
    )


async def _until_span(spans: InMemorySpanExporter, name: str, key: str) -> int:
    """The span id of the set's span `name`, once recorded."""
    for _ in range(60):
        for span in spans.get_finished_spans():
            if (
                span.name == name
                and span.attributes
                and span.attributes.get("kairyu.inferenceset") == key
                and span.context is not None
            ):
                return int(span.context.span_id)
        await asyncio.sleep(0.5)
    raise AssertionError(f"no span {name!r} of {key}")


async def _slices(kube: KubeClient, namespace: str) -> list[dict[str, Any]]:
    found = await kube.list(
        resources.ENDPOINTSLICES,
        namespace=namespace,
        label_selector="kubernetes.io/service-name=busy",
    )
    return [
        s
        for s in found["items"]
        if s["metadata"]["labels"].get("endpointslice.kubernetes.io/managed-by")
        == "activator.kairyu.io"
    ]


async def _until_slices(kube: KubeClient, namespace: str, count: int) -> list[dict[str, Any]]:
    for _ in range(120):
        found = await _slices(kube, namespace)
        if len(found) == count:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"busy's Service has {len(found)} activator slices, not {count}")


@pytest.mark.timeout(600)
async def test_an_annotated_set_scales_on_its_pods_load_to_zero_gpu_nodes_and_a_request_wakes_it(
    cluster: LocalCluster,
    namespace: str,
    kube: KubeClient,
    *,
    pods: PodStandIns,
    scaling_system: tuple[ServiceStack, ActivatorHttpSettings],
    spans: InMemorySpanExporter,
) -> None:
    _, activator = scaling_system
    pods.waiting = 1  # one request in flight on each pod
    await asyncio.to_thread(cluster.apply, _annotated_set(namespace))

    # kairyu made the set's ScaledObject, KAITO's way, and says so on the set.
    await _until(kube, namespace, (1, 1, 1))
    scaled = await kube.get(resources.SCALEDOBJECTS, "busy", namespace=namespace)
    assert scaled["metadata"]["annotations"]["scaledobject.kaito.sh/managed-by"] == "kairyu"
    assert scaled["metadata"]["ownerReferences"][0]["kind"] == "InferenceSet"
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (0, 3)
    found = await kube.get(resources.INFERENCESETS, "busy", namespace=namespace)
    (condition,) = [c for c in found["status"]["conditions"] if c["type"] == "AutoscalingReady"]
    assert condition["status"] == "True", condition
    assert "0..3 replicas on vllm:num_requests_waiting" in condition["message"]
    service = await kube.get(resources.SERVICES, "busy", namespace=namespace)
    assert service["spec"]["selector"] == {"inferenceset.kaito.sh/created-by": "busy"}

    # Load: three requests queued on the pod, one per replica wanted. KEDA's HPA reads it
    # through the apiserver and the set grows to three replicas, each on a GPU node of its own.
    pods.waiting = 3
    grew = await _until(kube, namespace, (3, 3, 3))
    hpa = json.loads(
        (
            await asyncio.to_thread(
                cluster.kubectl, "get", "hpa", "keda-hpa-busy", "-n", namespace, "-o", "json"
            )
        ).stdout
    )
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "InferenceSet"
    (read,) = hpa["status"]["currentMetrics"]
    assert read["type"] == "External"
    # The step is a trace of the set's: each added replica with its wait for a GPU node.
    step = await _until_span(spans, "scale 1→3", f"{namespace}/busy")
    replicas = [s for s in spans.get_finished_spans() if s.parent and s.parent.span_id == step]
    assert len(replicas) == 2, [s.name for s in replicas]
    for added in replicas:
        parts = {
            s.name.split()[0]
            for s in spans.get_finished_spans()
            if s.parent and s.parent.span_id == added.context.span_id
        }
        assert parts == {"nodes", "model"}, (added.name, parts)

    # Idle: after the cooldown KEDA takes the set to zero and every GPU node goes; the set's
    # Service now points at the activator.
    pods.waiting = 0
    emptied = await _until(kube, namespace, (0, 0, 0))
    (cold,) = await _until_slices(kube, namespace, 1)
    (endpoint,) = cold["endpoints"]
    assert endpoint["addresses"] == [activator.address]
    (port,) = cold["ports"]
    assert (port["name"], port["port"]) == ("http", activator.port)

    # A request, sent where the Service's endpoint is: 503 with Retry-After at once, and the
    # set comes back from zero (a node, then a ready pod), which takes the activator out.
    pods.waiting = 1  # the retried request, once served
    woke_at = time.monotonic()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://{activator.address}:{activator.port}/v1/chat/completions",
            json={"model": "busy", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Host": f"busy.{namespace}.svc.cluster.local"},
        ) as response,
    ):
        body = await response.json()
        assert response.status == 503
        assert response.headers["Retry-After"] == "20"
        assert body["error"]["type"] == "model_cold"
    await _until(kube, namespace, (1, 1, 1))
    cold_start = time.monotonic() - woke_at
    # The HPA, back in charge at one replica, keeps one: its busy recommendation of minutes ago
    # does not order two more GPU nodes for one request.
    await _until_hpa(cluster, namespace, current=1, desired=1)
    assert (await _state(kube, namespace, all_claims=False)) == (1, 1, 1)
    await _until_slices(kube, namespace, 0)
    print(  # noqa: T201 - the figures docs/autoscaling.md reports
        f"\nscale-up 1→3 ready: {grew:.1f} s; idle → 0 GPU nodes: {emptied:.1f} s; "
        f"cold start (request → ready pod): {cold_start:.1f} s"
    )

    # Without the annotation kairyu deletes the ScaledObject it made (KEDA then removes its
    # HPA) and the set keeps its replicas.
    await asyncio.to_thread(
        cluster.kubectl,
        "annotate",
        "inferenceset",
        "busy",
        "-n",
        namespace,
        "scaledobject.kaito.sh/auto-provision-",
    )
    for _ in range(120):
        try:
            await kube.get(resources.SCALEDOBJECTS, "busy", namespace=namespace)
        except errors.NotFoundError:
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError("the ScaledObject kairyu made outlived its annotation")
    for _ in range(120):
        gone = await asyncio.to_thread(
            cluster.kubectl, "get", "hpa", "keda-hpa-busy", "-n", namespace, check=False
        )
        if gone.returncode != 0:
            break
        await asyncio.sleep(0.5)
    assert gone.returncode != 0, "KEDA left its HPA behind"
    found = await kube.get(resources.INFERENCESETS, "busy", namespace=namespace)
    assert found["spec"]["replicas"] == 1
    assert not [c for c in found["status"]["conditions"] if c["type"] == "AutoscalingReady"]
