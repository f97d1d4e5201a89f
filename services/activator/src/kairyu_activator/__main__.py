"""`python -m kairyu_activator`: serve the autoscaled sets' load and cold requests until SIGTERM."""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any

from kairyu_activator.app import Activator
from kairyu_activator.serving import listen
from kairyu_activator.settings import ActivatorSettings
from kairyu_core import service
from kairyu_core.bus import FOLLOWS, StateBus
from kairyu_core.kube import KubeClient
from kairyu_core.reconciling import Reconcile
from kairyu_core.view import View


async def serve(settings: ActivatorSettings) -> None:
    activators: list[Activator] = []

    def make(bus: StateBus, kube: KubeClient, view: View) -> Reconcile:
        activator = Activator(
            settings=settings.activator, kube=kube, view=view, field_manager=settings.service_name
        )
        activators.append(activator)
        return activator.reconcile

    def listeners(
        bus: StateBus, kube: KubeClient, controlled: service.Controlled
    ) -> Sequence[Coroutine[Any, Any, None]]:
        return [listen(activators[-1], settings.activator)]

    await service.serve_controller(
        settings, kinds=FOLLOWS["activator"], reconcile=make, background=listeners
    )


def main() -> None:
    service.main(ActivatorSettings, serve)


if __name__ == "__main__":
    main()
