"""The activator's two HTTP listeners: the sets' load for KEDA, and requests to cold sets.

- The load port answers `GET /v1/load/<namespace>/<set>?metric=<gauge>` with `{"value": N}`,
  the shape KEDA's metrics-api scaler reads (`valueLocation: value`). Only vLLM's two load
  gauges may be asked for; an unknown set is a 404, so a ScaledObject left behind reads an error,
  not a zero.
- The data port is where a set's Service points while no pod of the set is ready. Any request
  there is answered at once with 503 and `Retry-After` (an OpenAI-style error body, so SDKs show
  the message), and counts as the set's load, which wakes it. A request for a set that has a
  ready pod meanwhile gets `Retry-After: 1`: its Service is switching back to the pods.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from kairyu_activator.app import Activator
from kairyu_activator.routing import set_key
from kairyu_activator.settings import ActivatorHttpSettings
from kairyu_contracts.api.inferenceset import LOAD_METRICS as METRICS

log = logging.getLogger(__name__)
_SWITCHING_S = 1
_ACTIVATOR = web.AppKey("activator", Activator)
_SETTINGS = web.AppKey("settings", ActivatorHttpSettings)


def _error(status: int, message: str, kind: str, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    body = {"error": {"message": message, "type": kind, "code": status}}
    return web.json_response(body, status=status, headers=headers)


async def _load(request: web.Request) -> web.Response:
    activator = request.app[_ACTIVATOR]
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    metric = request.query.get("metric", METRICS[0])
    if metric not in METRICS:
        return _error(400, f"metric must be one of {', '.join(METRICS)}", "invalid_request")
    key = set_key(namespace, name)
    if not activator.holds(key):
        return _error(404, f"no InferenceSet {namespace}/{name}", "not_found")
    return web.json_response({"value": await activator.load(key, metric)})


async def _cold(request: web.Request) -> web.Response:
    activator = request.app[_ACTIVATOR]
    settings = request.app[_SETTINGS]
    host = request.headers.get("Host", "")
    key = activator.set_for_host(host)
    if key is None:
        return _error(404, f"no InferenceSet is served as {host!r}", "not_found")
    name = key.removeprefix("InferenceSet/")
    if not activator.knock(key):
        return _error(503, f"{name} is ready; retry", "model_switching", _SWITCHING_S)
    log.info("%s: a request while at zero replicas; it asks for one", name)
    return _error(
        503,
        f"{name} has no ready replica and is starting one; retry in {settings.retry_after_s} s",
        "model_cold",
        settings.retry_after_s,
    )


def load_app(activator: Activator, settings: ActivatorHttpSettings) -> web.Application:
    app = web.Application()
    app[_ACTIVATOR] = activator
    app[_SETTINGS] = settings
    app.router.add_get("/v1/load/{namespace}/{name}", _load)
    return app


def data_app(activator: Activator, settings: ActivatorHttpSettings) -> web.Application:
    # Request bodies are not read: a cold set's answer does not depend on them.
    app = web.Application(client_max_size=1024)
    app[_ACTIVATOR] = activator
    app[_SETTINGS] = settings
    app.router.add_route("*", "/{tail:.*}", _cold)
    return app


@asynccontextmanager
async def serving(
    activator: Activator, settings: ActivatorHttpSettings
) -> AsyncIterator[tuple[int, int]]:
    """Both listeners until the block ends; yields the (load, data) ports bound."""
    runners = [
        web.AppRunner(load_app(activator, settings), access_log=None),
        web.AppRunner(data_app(activator, settings), access_log=None),
    ]
    try:
        ports = []
        for runner, port in zip(runners, (settings.load_port, settings.port), strict=True):
            await runner.setup()
            site = web.TCPSite(runner, settings.host, port)
            await site.start()
            ports.append(int(runner.addresses[0][1]))
        activator.port = ports[1]
        yield ports[0], ports[1]
    finally:
        for runner in runners:
            await runner.cleanup()


async def listen(activator: Activator, settings: ActivatorHttpSettings) -> None:
    """Both listeners until cancelled, then the activator's client to the pods closed.

    Run while this replica leads: its view is the one they answer from.
    """
    try:
        async with serving(activator, settings):
            await asyncio.Event().wait()
    finally:
        await activator.close()
