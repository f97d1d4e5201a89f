"""`python -m kairyu_planner`: plan Workspaces and serve the admission webhook until SIGTERM."""

from __future__ import annotations

from functools import partial

from kairyu_core import service
from kairyu_core.bus import Consumer
from kairyu_core.catalog import load_catalog
from kairyu_planner import webhook
from kairyu_planner.app import CONSUMED, Planner, consumer_spec
from kairyu_planner.settings import PlannerSettings
from kairyu_planner.validation import validate


async def serve(settings: PlannerSettings) -> None:
    catalog = load_catalog()
    async with service.connections(settings) as (bus, kube):
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
        try:
            await service.run_until_stopped(consumer=consumer, grace_s=settings.shutdown_grace_s)
        finally:
            if runner is not None:
                await runner.cleanup()


def main() -> None:
    service.main(PlannerSettings, serve)


if __name__ == "__main__":
    main()
