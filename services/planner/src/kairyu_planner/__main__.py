"""`python -m kairyu_planner`: plan Workspaces and serve the admission webhook until SIGTERM.

The webhook starts first and stops last: it needs no NATS (and the apiserver only to issue its
own certificate, in the chart's default mode: kairyu_planner.certificates), and while it is down
(with `failurePolicy: Fail`) no Workspace in the cluster can be written, so a planner that waits
for NATS must still answer admission requests. The health server (/healthz for the startup
and liveness probes) also runs from the start, across NATS outages: a planner whose NATS is down
is alive and keeps admitting; only /readyz on the health port says NATS is unusable.

With more than one replica, only the one that holds the planner's Lease plans
(`service.leading`); the webhook and its certificate upkeep are stateless and run on every
replica, so each keeps answering admission requests behind the webhook's Service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from kairyu_contracts.catalog import Catalog, load_catalog
from kairyu_core import service
from kairyu_core.kube import KubeClient
from kairyu_core.retrying import retry_forever
from kairyu_planner import certificates, webhook
from kairyu_planner.app import Planner, followed
from kairyu_planner.settings import PlannerSettings
from kairyu_planner.validation import validate

log = logging.getLogger(__name__)
_RETRY_MAX_S = 30.0  # a NATS outage is retried this often at most while the webhook serves
_CERT_WAIT_S = 2.0  # a Secret volume is filled within the kubelet's sync period (about a minute)


async def serve(settings: PlannerSettings) -> None:
    catalog = load_catalog()
    hook = settings.webhook
    async with contextlib.AsyncExitStack() as stack:
        # Health first: the startup and liveness probes must pass while the certificate is being
        # issued or the Secret volume is still being filled.
        readiness = await stack.enter_async_context(service.health_server(settings))
        files = await _certificate_files(settings, stack)
        if files is not None:
            runner = await webhook.serve(
                host=hook.host,
                port=hook.port,
                cert=files[0],
                key=files[1],
                validator=partial(validate, catalog=catalog, planning=settings.planning),
            )
            stack.push_async_callback(runner.cleanup)
        await _plan_with_retries(settings, catalog, readiness, webhook_serves=files is not None)


async def _certificate_files(
    settings: PlannerSettings, stack: contextlib.AsyncExitStack
) -> tuple[Path, Path] | None:
    """The files to serve the webhook with: its own (self-issued), given ones, or none (off).

    A self-issued certificate needs the apiserver before anything can be served; the files are
    kept current (renewal, another replica's rotation) until `stack` closes.
    """
    hook = settings.webhook
    issued = hook.self_issued
    if not issued.secret:
        if not (hook.cert_file and hook.key_file):
            return None
        # The chart mounts the Secret as optional (the default mode creates it after start):
        # wait for cert-manager or the kubelet rather than fail on missing files.
        while not (hook.cert_file.exists() and hook.key_file.exists()):
            log.warning("waiting for the webhook certificate %s", hook.cert_file)
            await asyncio.sleep(_CERT_WAIT_S)
        return hook.cert_file, hook.key_file
    kube = await KubeClient.connect(settings.kube.kubeconfig, timeouts=settings.kube.timeouts)
    stack.push_async_callback(kube.close)
    target = certificates.CertificateTarget(
        namespace=issued.namespace,
        secret=issued.secret,
        service=issued.service,
        configuration=issued.configuration,
        validity=timedelta(days=issued.validity_days),
    )
    return await stack.enter_async_context(
        certificates.self_issued(
            kube, target, field_manager=settings.service_name, interval_s=issued.check_interval_s
        )
    )


async def _plan_with_retries(
    settings: PlannerSettings,
    catalog: Catalog,
    readiness: service.Readiness,
    *,
    webhook_serves: bool,
) -> None:
    if not webhook_serves:
        await _plan_until_stopped(settings, catalog, readiness)
        return
    # Without NATS there is nothing to plan, but the webhook must keep answering: any failure of
    # the planning side (a BusError, an error the bus did not foresee) is retried. CancelledError
    # is not an Exception, so a shutdown still ends the retries.
    retrying = retry_forever(
        "planning (the admission webhook keeps serving)",
        on=Exception,
        first_s=1.0,
        max_s=_RETRY_MAX_S,
    )
    await retrying(_plan_until_stopped, settings, catalog, readiness)


async def _plan_until_stopped(
    settings: PlannerSettings, catalog: Catalog, readiness: service.Readiness
) -> None:
    async with service.connections(settings, readiness) as (bus, kube):

        def term() -> list[Coroutine[Any, Any, None]]:
            return service.Controlled(
                bus,
                service=settings.service_name,
                kinds=followed(settings.planning),
                reconcile=lambda view: (
                    Planner(settings=settings, kube=kube, view=view, catalog=catalog).reconcile
                ),
            ).work()

        await service.run_until_stopped(background=[service.leading(settings, kube, term)])


def main() -> None:
    service.main(PlannerSettings, serve)


if __name__ == "__main__":
    main()
