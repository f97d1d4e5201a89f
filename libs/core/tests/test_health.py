"""The probe endpoints: alive while the loop runs, ready only while the bus is connected."""

from __future__ import annotations

import aiohttp

from kairyu_core.health import serving
from kairyu_localenv.processes import free_port


async def test_readiness_follows_the_bus_connection() -> None:
    connected = False
    port = free_port()
    async with serving(port, ready=lambda: connected), aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{port}"
        async with http.get(f"{base}/healthz") as alive:
            assert alive.status == 200
        async with http.get(f"{base}/readyz") as not_ready:
            assert not_ready.status == 503
            assert "NATS" in await not_ready.text()
        connected = True
        async with http.get(f"{base}/readyz") as ready:
            assert ready.status == 200
