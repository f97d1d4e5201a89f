"""What every service's `__main__` does: connect, run until SIGTERM, shut down in order.

Each service differs only in what it runs (a consumer, a watch loop, a webhook, a periodic
check); the connection set-up, the signal handling and the order of shutdown (stop fetching, let
in-flight messages finish within the grace period, cancel the rest, close the connections) are the
same, so they live here once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from kairyu_core import health, tracing
from kairyu_core import logging as kairyu_logging
from kairyu_core.bus import Bus, Consumer, ConsumerSpec, Handler
from kairyu_core.events import Event
from kairyu_core.kube import KubeClient
from kairyu_core.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)


@asynccontextmanager
async def connections(settings: ServiceSettings) -> AsyncIterator[tuple[Bus, KubeClient]]:
    """The bus (with the stream ensured) and the Kubernetes client, closed on exit."""
    bus = await Bus.connect(settings.nats, name=settings.service_name)
    try:
        kube = await KubeClient.connect(settings.kube.kubeconfig, timeouts=settings.kube.timeouts)
        try:
            await bus.ensure_stream()
            async with health.serving(settings.health_port, ready=lambda: bus.is_connected):
                yield bus, kube
        finally:
            await kube.close()
    finally:
        await bus.close()


async def run_until_stopped(
    *,
    consumer: Consumer | None = None,
    background: Sequence[Coroutine[Any, Any, None]] = (),
    grace_s: float,
) -> None:
    """Run the consumer and the background work until SIGTERM / SIGINT or until one of them ends.

    Then the consumer stops fetching and gets `grace_s` for in-flight messages, and the background
    work is cancelled. An exception of any of them is raised after the shutdown.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    tasks = [asyncio.create_task(work) for work in background]
    consuming = asyncio.create_task(consumer.run()) if consumer is not None else None
    watched = [*tasks, *([consuming] if consuming else [])]
    stop = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait([*watched, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if consumer is not None:
            await consumer.stop(grace_s)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*watched, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    for result in results:
        if isinstance(result, Exception):
            raise result


async def serve_consumer(
    settings: ServiceSettings,
    *,
    spec: Callable[[Bus], ConsumerSpec],
    events: Mapping[str, type[Event]],
    handler: Callable[[Bus, KubeClient], Handler],
) -> None:
    """Run a service that is one consumer and nothing else (the deployer, the tuner).

    Connect, consume until SIGTERM, shut down in order.
    """
    async with connections(settings) as (bus, kube):
        consumer = Consumer(
            bus,
            spec(bus),
            service=settings.service_name,
            events=events,
            handler=handler(bus, kube),
        )
        await run_until_stopped(consumer=consumer, grace_s=settings.shutdown_grace_s)


def main(settings_type: type[S], serve: Callable[[S], Coroutine[Any, Any, None]]) -> None:
    """Build the settings once, configure logging and tracing, and run `serve`."""
    settings = settings_type()
    kairyu_logging.configure(settings.log, service=settings.service_name)
    tracing.configure(settings.service_name)
    asyncio.run(serve(settings))
