"""`python -m kairyu_tuner`: run tuning Jobs until SIGTERM."""

from __future__ import annotations

from kairyu_core import service
from kairyu_core.bus import Consumer
from kairyu_core.catalog import load_catalog
from kairyu_tuner.app import CONSUMED, Tuner, consumer_spec
from kairyu_tuner.settings import TunerSettings


async def serve(settings: TunerSettings) -> None:
    async with service.connections(settings) as (bus, kube):
        tuner = Tuner(settings=settings, bus=bus, kube=kube, catalog=load_catalog())
        consumer = Consumer(
            bus,
            consumer_spec(settings, bus),
            service=settings.service_name,
            events=CONSUMED,
            handler=tuner.handle,
        )
        await service.run_until_stopped(consumer=consumer, grace_s=settings.shutdown_grace_s)


def main() -> None:
    service.main(TunerSettings, serve)


if __name__ == "__main__":
    main()
