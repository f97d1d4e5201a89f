"""`python -m kairyu_planner`: plan Workspaces and serve the admission webhook until SIGTERM.

The webhook starts first and stops last: it needs neither NATS nor the apiserver, and while it is
down (with `failurePolicy: Fail`) no Workspace in the cluster can be written, so a planner that
waits for NATS must still answer admission requests. The health server (/healthz for the startup
and liveness probes) also runs from the start, across NATS outages: a planner whose NATS is down
is alive and keeps admitting; only /readyz on the health port says NATS is unusable.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from kairyu_core import service
from kairyu_core.bus import BusError, Consumer
from kairyu_core.catalog import Catalog, load_catalog
from kairyu_planner import webhook
from kairyu_planner.app import CONSUMED, Planner, consumer_spec
from kairyu_planner.settings import PlannerSettings
from kairyu_planner.validation import validate

log = logging.getLogger(__name__)
_RETRY_MAX_S = 30.0  # a NATS outage is retried this often at most while the webhook serves


async def serve(settings: PlannerSettings) -> None:
    catalog = load_catalog()
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
        async with service.health_server(settings) as readiness:
            serving = runner is not None
            await _plan_with_retries(settings, catalog, readiness, webhook_serves=serving)
    finally:
        if runner is not None:
            await runner.cleanup()


async def _plan_with_retries(
    settings: PlannerSettings,
    catalog: Catalog,
    readiness: service.Readiness,
    *,
    webhook_serves: bool,
) -> None:
    delay = 1.0
    while True:
        try:
            await _plan_until_stopped(settings, catalog, readiness)
        except BusError as exc:
            if not webhook_serves:
                raise
            # Without NATS there is nothing to plan, but the webhook must keep answering.
            log.warning("%s; the admission webhook keeps serving; retrying in %gs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)
        else:
            return


async def _plan_until_stopped(
    settings: PlannerSettings, catalog: Catalog, readiness: service.Readiness
) -> None:
    async with service.connections(settings, readiness) as (bus, kube):
        planner = Planner(settings=settings, bus=bus, kube=kube, catalog=catalog)
        consumer = Consumer(
            bus,
            consumer_spec(settings, bus),
            service=settings.service_name,
            events=CONSUMED,
            handler=planner.handle,
        )
        await service.run_until_stopped(consumer=consumer, grace_s=settings.shutdown_grace_s)


def main() -> None:
    service.main(PlannerSettings, serve)


if __name__ == "__main__":
    main()
