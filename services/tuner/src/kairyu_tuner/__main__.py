"""`python -m kairyu_tuner`: run tuning Jobs until SIGTERM."""

from __future__ import annotations

from kairyu_core import service
from kairyu_core.catalog import load_catalog
from kairyu_tuner.app import CONSUMED, Tuner, consumer_spec
from kairyu_tuner.settings import TunerSettings


async def serve(settings: TunerSettings) -> None:
    await service.serve_consumer(
        settings,
        spec=lambda bus: consumer_spec(settings, bus),
        events=CONSUMED,
        handler=lambda bus, kube: (
            Tuner(settings=settings, bus=bus, kube=kube, catalog=load_catalog()).handle
        ),
    )


def main() -> None:
    service.main(TunerSettings, serve)


if __name__ == "__main__":
    main()
