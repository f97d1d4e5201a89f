"""`python -m kairyu_tuner`: run tuning Jobs until SIGTERM."""

from __future__ import annotations

from kairyu_contracts.catalog import load_catalog
from kairyu_core import service
from kairyu_core.bus import FOLLOWS
from kairyu_tuner.app import Tuner
from kairyu_tuner.settings import TunerSettings


async def serve(settings: TunerSettings) -> None:
    catalog = load_catalog()
    await service.serve_controller(
        settings,
        kinds=FOLLOWS["tuner"],
        reconcile=lambda bus, kube, view: (
            Tuner(settings=settings, kube=kube, view=view, catalog=catalog).reconcile
        ),
    )


def main() -> None:
    service.main(TunerSettings, serve)


if __name__ == "__main__":
    main()
