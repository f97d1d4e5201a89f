"""What every service's `__main__` does: connect, run until SIGTERM, shut down in order.

Each service differs only in what it runs (a controller over its view, a watch loop, a webhook,
a periodic check); the connection set-up, the signal handling and the order of shutdown (cancel
the work, close the connections) are the same, so they live here once. So does leader election:
with more than one replica of a service, `leading` runs its reconciles and timers in one replica
at a time (kube.leadership).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

from kairyu_contracts.objectstate import Kind
from kairyu_core import health, tracing
from kairyu_core import logging as kairyu_logging
from kairyu_core.bus import FOLLOWS, BusError, BusSettingsError, StateBus
from kairyu_core.bus.connecting import connect_bus
from kairyu_core.informing import Informer
from kairyu_core.kube import KubeClient
from kairyu_core.kube.leadership import lead, lease_of
from kairyu_core.reconciling import Controller, Reconcile
from kairyu_core.retrying import retry_forever
from kairyu_core.settings import ServiceSettings
from kairyu_core.view import View

S = TypeVar("S", bound=ServiceSettings)
log = logging.getLogger(__name__)


_WAIT_MAX_S = 30.0  # while the bus is unreachable, look at least this often


class Readiness:
    """What /readyz reports: the bus once connected, up now, with its streams there.

    Made before the connection, so that the health server (/healthz: the event loop runs) serves
    from the first second, also while the bus is unreachable; /readyz says whether it is usable.
    """

    def __init__(self) -> None:
        self.bus: StateBus | None = None

    def __call__(self) -> bool:
        bus = self.bus
        return bus is not None and bus.is_connected and bus.topology_ready


@asynccontextmanager
async def health_server(settings: ServiceSettings) -> AsyncIterator[Readiness]:
    """Serve /healthz, /readyz and /metrics (if a health port is set) until the block ends."""
    readiness = Readiness()
    async with health.serving(settings.health_port, ready=readiness):
        yield readiness


@asynccontextmanager
async def connections(
    settings: ServiceSettings, readiness: Readiness | None = None
) -> AsyncIterator[tuple[StateBus, KubeClient]]:
    """The bus `settings.bus` names (its streams or entities there) and the Kubernetes client.

    Both are closed on exit. The health server runs first (unless the caller runs it and passes
    its `readiness`). A bus unreachable at start, or a stream or entity the set-up has not
    created yet, is waited for with a capped backoff, not ready meanwhile, instead of ending the
    service: a restarted container would find neither any better.
    """
    async with AsyncExitStack() as stack:
        if readiness is None:
            readiness = await stack.enter_async_context(health_server(settings))
        bus: StateBus = await retry_forever(
            f"connecting to {settings.bus}", on=BusError, max_s=_WAIT_MAX_S
        )(connect_bus, settings)
        stack.push_async_callback(bus.close)
        readiness.bus = bus
        stack.callback(setattr, readiness, "bus", None)
        kube = await KubeClient.connect(settings.kube.kubeconfig, timeouts=settings.kube.timeouts)
        stack.push_async_callback(kube.close)
        await bus.wait_for_streams()  # created by the set-up step or template, never here
        yield bus, kube


async def run_until_stopped(
    *,
    background: Sequence[Coroutine[Any, Any, None]] = (),
) -> None:
    """Run the background work until SIGTERM / SIGINT or until one piece of it ends, then cancel it.

    An exception of any of it is raised after the shutdown. Nothing needs a grace period: a
    reconcile cut short is level-triggered work that the next leader does again.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    tasks = [asyncio.create_task(work) for work in background]
    stop = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    for result in results:
        if isinstance(result, Exception):
            raise result


async def leading(
    settings: ServiceSettings,
    kube: KubeClient,
    term: Callable[[], Sequence[Coroutine[Any, Any, None]]],
) -> None:
    """Run `term()`'s work while this replica leads its service; until cancelled or it ends.

    Each term of leadership gets fresh work (a new view, controller and timers: what an earlier
    term knew may be stale now), which is cancelled as soon as the Lease is lost; the work of a
    standby has not started. With election off (one replica) the work simply runs.
    """
    election = settings.leader_election
    if not election.enabled:
        await until_first_ends(term())
        return
    lease = lease_of(election, service=settings.service_name)
    await lead(kube, lease, lambda: until_first_ends(term()))


async def until_first_ends(work: Sequence[Coroutine[Any, Any, None]]) -> None:
    """Run `work` together; when one ends (or raises), cancel the rest and return (or raise)."""
    tasks = [asyncio.ensure_future(one) for one in work]
    if not tasks:
        return
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()  # the first error, if one ended with one


class Controlled:
    """A service's view, the informer that feeds it from the bus, and the controller it wakes."""

    def __init__(
        self,
        bus: StateBus,
        *,
        service: str,
        kinds: Sequence[Kind],
        reconcile: Callable[[View], Reconcile],
        workers: int = 8,
    ) -> None:
        self.view = View(kinds)
        self.controller = Controller(
            service,
            reconcile(self.view),
            workers=workers,
            on_give_up=lambda key, reason, exc: _dead_letter(bus, service, key, reason, exc),
        )
        self.informer = Informer(bus, self.view, self.controller.enqueue)

    def work(self) -> list[Coroutine[Any, Any, None]]:
        """The informer, and the controller once the view is synced: to run until stopped."""
        return [self.informer.run(), self.controller.run(ready=self.informer.synced.wait())]


async def _dead_letter(
    bus: StateBus, service: str, key: str, reason: str, exc: BaseException
) -> None:
    """A reconcile given up on: logged, and recorded on the dead-letter stream for operators."""
    log.error("%s gave up reconciling %s (%s): %s", service, key, reason, exc)
    try:
        await bus.dead_letter_reconcile(service, key, reason=reason, error=str(exc))
    except BusError as failed:
        log.warning("could not record the dead letter of %s: %s", key, failed)


async def serve_controller(
    settings: ServiceSettings,
    *,
    kinds: Sequence[Kind],
    reconcile: Callable[[StateBus, KubeClient, View], Reconcile],
    background: Callable[[StateBus, KubeClient, Controlled], Sequence[Coroutine[Any, Any, None]]]
    | None = None,
    workers: int = 8,
) -> None:
    """Run a service that reconciles Workspaces from its view: connect, work until SIGTERM.

    The view, the controller and `background` run only while this replica leads (`leading`).
    """
    async with connections(settings) as (bus, kube):

        def term() -> list[Coroutine[Any, Any, None]]:
            controlled = Controlled(
                bus,
                service=settings.service_name,
                kinds=kinds,
                reconcile=lambda view: reconcile(bus, kube, view),
                workers=workers,
            )
            extra = background(bus, kube, controlled) if background is not None else ()
            return [*controlled.work(), *extra]

        await run_until_stopped(background=[leading(settings, kube, term)])


def main(settings_type: type[S], serve: Callable[[S], Coroutine[Any, Any, None]]) -> None:
    """Build the settings once, configure logging and tracing, and run `serve`."""
    settings = settings_type()
    kairyu_logging.configure(settings.log, service=settings.service_name)
    try:
        tracing.configure(settings.service_name)
    except tracing.TracingConfigError as exc:
        # A setting, not data: restarting cannot help, so say what is wrong and stop.
        log.error("%s", exc)  # noqa: TRY400 - the message is the whole story
        raise SystemExit(2) from None
    try:
        asyncio.run(serve(settings))
    except BusSettingsError as exc:
        # As above: a restarted container would find the same setting.
        log.error("%s", exc)  # noqa: TRY400 - the message is the whole story
        raise SystemExit(2) from None


def run_controller(
    settings_type: type[S], service: str, make: Callable[[S, KubeClient, View], Reconcile]
) -> None:
    """`main` of a service that is one controller over the kinds it follows (`FOLLOWS[service]`).

    `make(settings, kube, view)` gives the reconcile of one term of leadership.
    """

    async def serve(settings: S) -> None:
        await serve_controller(
            settings,
            kinds=FOLLOWS[service],
            reconcile=lambda bus, kube, view: make(settings, kube, view),
        )

    main(settings_type, serve)
