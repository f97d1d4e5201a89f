"""`python -m kairyu_planner`: plan Workspaces and serve the admission webhook until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from functools import partial

from kairyu_core import logging as kairyu_logging
from kairyu_core import tracing
from kairyu_core.bus import Bus, Consumer, StreamSpec
from kairyu_core.catalog import load_catalog
from kairyu_core.events import Subjects
from kairyu_core.kube import KubeClient
from kairyu_planner import webhook
from kairyu_planner.app import CONSUMED, Planner, consumer_spec
from kairyu_planner.settings import PlannerSettings
from kairyu_planner.validation import validate


async def serve(settings: PlannerSettings) -> None:
    catalog = load_catalog()
    stream = StreamSpec(
        name=settings.nats.stream, subjects=Subjects(prefix=settings.nats.subject_prefix)
    )
    bus = await Bus.connect(settings.nats.url, name=settings.service_name, stream=stream)
    kube = await KubeClient.connect(settings.kube.kubeconfig)
    await bus.ensure_stream()
    planner = Planner(settings=settings, bus=bus, kube=kube, catalog=catalog)
    consumer = Consumer(
        bus,
        consumer_spec(settings, bus),
        service=settings.service_name,
        events=CONSUMED,
        handler=planner.handle,
    )
    hook = settings.webhook
    runner = None
    if hook.cert_file and hook.key_file:
        runner = await webhook.serve(
            host=hook.host,
            port=hook.port,
            cert=hook.cert_file,
            key=hook.key_file,
            validator=partial(validate, catalog=catalog, planning=settings.planning),
        )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait(
            [task, asyncio.create_task(stopping.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        await consumer.stop(settings.shutdown_grace_s)
        await task
    finally:
        if runner is not None:
            await runner.cleanup()
        await kube.close()
        await bus.close()


def main() -> None:
    settings = PlannerSettings()
    kairyu_logging.configure(settings.log, service=settings.service_name)
    tracing.configure(settings.service_name)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
