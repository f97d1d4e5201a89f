"""`python -m kairyu_watcher`: run the watcher until SIGTERM / Ctrl-C."""

from __future__ import annotations

import asyncio
import signal

from kairyu_core import logging as kairyu_logging
from kairyu_core import tracing
from kairyu_core.bus import Bus, StreamSpec
from kairyu_core.events import Subjects
from kairyu_core.kube import KubeClient
from kairyu_watcher.app import Watcher
from kairyu_watcher.settings import WatcherSettings


async def serve(settings: WatcherSettings) -> None:
    stream = StreamSpec(
        name=settings.nats.stream, subjects=Subjects(prefix=settings.nats.subject_prefix)
    )
    bus = await Bus.connect(settings.nats.url, name=settings.service_name, stream=stream)
    kube = await KubeClient.connect(settings.kube.kubeconfig)
    task = asyncio.create_task(Watcher(settings=settings, bus=bus, kube=kube).run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        await kube.close()
        await bus.close()


def main() -> None:
    settings = WatcherSettings()
    kairyu_logging.configure(settings.log, service=settings.service_name)
    tracing.configure(settings.service_name)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
