"""Liveness, readiness and Prometheus metrics over HTTP for a service's pod.

`/healthz` answers while the event loop runs (a wedged loop cannot answer, and the kubelet restarts
the pod); `/readyz` answers 200 only while the bus connection is up, so a service cut off from
NATS is visible in `kubectl get pods` instead of silently idle. Off unless a port is configured
(local runs start several services on one host).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from kairyu_core import metrics


@asynccontextmanager
async def serving(port: int, *, ready: Callable[[], bool]) -> AsyncIterator[None]:
    if port <= 0:
        yield
        return

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready")
        return web.Response(status=503, text="not connected to NATS")

    async def prometheus(_: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host="0.0.0.0", port=port)  # noqa: S104 - the kubelet probes the pod IP
    await site.start()
    try:
        yield
    finally:
        await runner.cleanup()
