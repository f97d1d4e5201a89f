"""The activator: which set a Host names, a set's load, and its Service and cold slice.

The reconcile runs against a View and RecordingKube (writes recorded, reads refused); the load
is asked from real HTTP servers that serve pods' `/metrics` in vLLM's names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kairyu_activator.app import Activator
from kairyu_activator.load import Demand, MetricsFormatError, gauge_sum
from kairyu_activator.routing import set_of_host
from kairyu_activator.serving import serving
from kairyu_activator.settings import ActivatorHttpSettings
from kairyu_contracts.objectstate import ObjectKey
from kairyu_core.kube import errors
from kairyu_core.view import View
from kairyu_testing.recording import RecordingKube

SET_KEY = "InferenceSet/ml/phi"
VLLM_METRICS = """\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="phi"} 4.0
vllm:num_requests_waiting{engine="0",model_name="phi-adapter"} 2.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="phi"} 7.0
"""


def test_the_gauge_is_summed_over_a_pod_s_models_and_nothing_else() -> None:
    assert gauge_sum(VLLM_METRICS, "vllm:num_requests_waiting") == 6.0
    assert gauge_sum(VLLM_METRICS, "vllm:num_requests_running") == 7.0
    assert gauge_sum("# nothing here\n", "vllm:num_requests_waiting") == 0.0
    assert gauge_sum("vllm:num_requests_waiting NaN\n", "vllm:num_requests_waiting") == 0.0
    with pytest.raises(MetricsFormatError):
        gauge_sum("vllm:num_requests_waiting{ 3\n", "vllm:num_requests_waiting")


def test_demand_counts_the_requests_of_its_window_and_is_bounded() -> None:
    demand = Demand(window_s=10, limit=3)
    for t in (0.0, 1.0, 2.0, 3.0):
        demand.add(t)
    assert demand.count(5.0) == 3  # the oldest fell out of the bound
    assert demand.count(12.5) == 1  # only the request at 3.0 is within 10 s
    demand.clear()
    assert demand.count(12.5) == 0


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("phi.ml.svc.cluster.local", SET_KEY),
        ("phi.ml.svc.cluster.local:80", SET_KEY),
        ("phi.ml.svc", SET_KEY),
        ("PHI.ml", SET_KEY),
        ("phi", None),  # two namespaces have a set `phi`: the short name is ambiguous
        ("solo", "InferenceSet/other/solo"),
        ("phi.nowhere.svc", None),
        ("phi.ml.example.com", None),
        ("10.96.0.12:80", None),
        ("[::1]:80", None),
        ("", None),
    ],
)
def test_the_host_names_the_set(host: str, key: str | None) -> None:
    sets = {"phi": ["ml", "other"], "solo": ["other"]}
    assert set_of_host(host, sets) == key


def inference_set(*, autoscaled: bool = True) -> dict[str, Any]:
    annotations = {"scaledobject.kaito.sh/auto-provision": "true"} if autoscaled else {}
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "metadata": {"name": "phi", "namespace": "ml", "uid": "set-1", "annotations": annotations},
        "spec": {"replicas": 1},
    }


def workspace(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"ws-{name}",
            "labels": {"inferenceset.kaito.sh/created-by": "phi"},
        },
    }


def pod(name: str, workspace: str, ip: str, *, ready: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"pod-{name}",
            "labels": {"kaito.sh/workspace": workspace, "inferenceset.kaito.sh/created-by": "phi"},
        },
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def view_of(*objects: tuple[str, dict[str, Any]]) -> View:
    view = View(("Workspace", "InferenceSet", "Pod"))
    for kind, obj in objects:
        view.apply(ObjectKey.of(kind, obj), obj)  # type: ignore[arg-type]
    return view


SETTINGS = ActivatorHttpSettings(address="192.0.2.7", port=8081, scrape_ttl_s=0)


async def test_a_cold_autoscaled_set_gets_its_service_and_the_activator_s_slice() -> None:
    kube = RecordingKube()
    view = view_of(("InferenceSet", inference_set()), ("Workspace", workspace("phi-abcde")))
    activator = Activator(settings=SETTINGS, kube=kube, view=view, field_manager="kairyu-activator")
    await activator.reconcile("ml/phi-abcde")  # a replica's change wakes its set
    service, endpoints = kube.calls
    assert service.path == "/api/v1/namespaces/ml/services/phi"
    assert service.body["spec"]["selector"] == {"inferenceset.kaito.sh/created-by": "phi"}
    assert service.body["spec"]["ports"][0]["targetPort"] == 5000
    assert service.query["force"] is False  # a stranger's Service of that name is not taken
    assert endpoints.path == "/apis/discovery.k8s.io/v1/namespaces/ml/endpointslices/phi-activator"
    slice_ = endpoints.body
    assert slice_["metadata"]["labels"] == {
        "kubernetes.io/service-name": "phi",
        "endpointslice.kubernetes.io/managed-by": "activator.kairyu.io",
    }
    assert slice_["endpoints"] == [{"addresses": ["192.0.2.7"], "conditions": {"ready": True}}]
    assert slice_["ports"] == [{"name": "http", "port": 8081, "protocol": "TCP"}]
    assert slice_["metadata"]["ownerReferences"][0]["uid"] == "set-1"

    kube.calls.clear()
    await activator.reconcile(SET_KEY)  # nothing changed: nothing is sent again
    assert kube.calls == []

    # A pod of the replica is ready: the slice goes, the Service's own endpoints serve.
    ready = pod("phi-abcde-0", "phi-abcde", "10.244.0.5")
    view.apply(ObjectKey.of("Pod", ready), ready)
    await activator.reconcile("ml/phi-abcde")
    (dropped,) = kube.calls
    assert (dropped.method, dropped.path) == ("DELETE", endpoints.path)


async def test_a_set_that_is_not_autoscaled_is_left_alone() -> None:
    kube = RecordingKube()
    view = view_of(("InferenceSet", inference_set(autoscaled=False)))
    activator = Activator(settings=SETTINGS, kube=kube, view=view, field_manager="kairyu-activator")
    await activator.reconcile(SET_KEY)
    # Once after a start: a slice it may have made before the annotation went goes.
    (dropped,) = kube.calls
    assert (dropped.method, dropped.path.rsplit("/", 1)[-1]) == ("DELETE", "phi-activator")
    kube.calls.clear()
    await activator.reconcile(SET_KEY)
    assert kube.calls == []


async def test_a_service_name_someone_else_holds_gets_no_slice() -> None:
    kube = RecordingKube()
    kube.fail_with("PATCH", "/services/phi", errors.ConflictError("phi: conflict", status=409))
    view = view_of(("InferenceSet", inference_set()))
    activator = Activator(settings=SETTINGS, kube=kube, view=view, field_manager="kairyu-activator")
    assert await activator.reconcile(SET_KEY) == 60.0  # looked at again later
    assert not kube.writes_to("/endpointslices", "PATCH")


class Pods:
    """Stand-ins for the set's pods: each serves vLLM's /metrics with a waiting count."""

    def __init__(self) -> None:
        self.waiting: dict[str, float] = {}
        self.base = ""

    def url_of(self, ip: str) -> str:
        return f"{self.base}/pods/{ip}"


@pytest.fixture
async def pods() -> AsyncIterator[Pods]:
    stand_ins = Pods()

    async def metrics(request: web.Request) -> web.Response:
        ip = request.match_info["ip"]
        if ip not in stand_ins.waiting:
            return web.Response(status=500)
        text = f'vllm:num_requests_waiting{{model_name="phi"}} {stand_ins.waiting[ip]}\n'
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/pods/{ip}/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    stand_ins.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield stand_ins
    await runner.cleanup()


async def test_the_load_is_the_ready_pods_gauge_plus_the_requests_at_zero(pods: Pods) -> None:
    view = view_of(
        ("InferenceSet", inference_set()),
        ("Workspace", workspace("phi-a")),
        ("Workspace", workspace("phi-b")),
    )
    now = [100.0]
    activator = Activator(
        settings=SETTINGS,
        kube=RecordingKube(),
        view=view,
        field_manager="kairyu-activator",
        address_of=pods.url_of,
        clock=lambda: now[0],
    )
    load_settings = SETTINGS.model_copy(update={"load_port": 0, "port": 0, "host": "127.0.0.1"})
    async with (
        serving(activator, load_settings) as (load_port, data_port),
        aiohttp.ClientSession() as http,
    ):

        async def load(path: str = "/v1/load/ml/phi") -> tuple[int, Any]:
            async with http.get(f"http://127.0.0.1:{load_port}{path}") as response:
                return response.status, await response.json()

        async def call(host: str) -> tuple[int, str | None, Any]:
            url = f"http://127.0.0.1:{data_port}/v1/chat/completions"
            async with http.post(url, json={"model": "phi"}, headers={"Host": host}) as r:
                return r.status, r.headers.get("Retry-After"), await r.json()

        assert await load() == (200, {"value": 0})
        # At zero a request is answered at once, says when to retry, and is the load.
        status, retry, body = await call("phi.ml.svc.cluster.local")
        assert (status, retry, body["error"]["type"]) == (503, "30", "model_cold")
        assert "starting one" in body["error"]["message"]
        assert await load() == (200, {"value": 1})
        assert (await call("nothing.ml.svc"))[0] == 404
        now[0] += SETTINGS.demand_window_s + 1  # nobody came back: it stops asking
        assert await load() == (200, {"value": 0})

        # Two ready pods: their waiting requests, summed; an unready pod adds nothing.
        for name, ip, waiting in (("a", "10.244.0.1", 3), ("b", "10.244.0.2", 4)):
            pods.waiting[ip] = waiting
            ready = pod(f"phi-{name}-0", f"phi-{name}", ip)
            view.apply(ObjectKey.of("Pod", ready), ready)
        starting = pod("phi-b-1", "phi-b", "10.244.0.3", ready=False)
        pods.waiting["10.244.0.3"] = 50
        view.apply(ObjectKey.of("Pod", starting), starting)
        assert await load() == (200, {"value": 7.0})
        # A pod that does not answer counts as nothing rather than failing the read.
        del pods.waiting["10.244.0.2"]
        assert await load() == (200, {"value": 3.0})
        # With a ready pod a stray request is sent back to the Service at once.
        status, retry, _ = await call("phi.ml")
        assert (status, retry) == (503, "1")

        assert (await load("/v1/load/ml/nothing"))[0] == 404
        status, body = await load("/v1/load/ml/phi?metric=up")
        assert status == 400
        assert "vllm:num_requests_waiting" in body["error"]["message"]
    await activator.close()
