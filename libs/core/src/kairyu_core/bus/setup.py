"""`python -m kairyu_core.bus.setup [--every S] [SERVICE …]`: create the stream and consumers.

Under NATS authorization the services may not touch the stream or any consumer (a leaked service
credential must not be able to purge, rewrite or delete them); only one admin identity may create
and update them, and this is the step that uses it. The admin identity may create and update,
never delete or purge.

The chart runs it as a native sidecar of each service pod (an init container with
`restartPolicy: Always`, without a startup probe, so it does not hold back the service's start),
with `--every 30` and the admin credentials mounted there alone. It ensures the stream and that
service's consumer at once and then every 30 s, so a consumer or stream deleted later is back
within one period; while NATS is unreachable it retries with a capped backoff and never exits.
The service meanwhile waits for its consumer, not ready, and resumes when it is back
(docs/bus.md, "Who may do what"). Without `--every` it runs once and exits 1 on failure (tools,
tests, a one-off Job).

Settings come from the same KAIRYU_NATS__* variables as a service's. Without NATS authorization
the services do this themselves at start (`NatsSettings.manage_topology`), so local runs need no
separate step.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

import nats.errors

from kairyu_core import logging as kairyu_logging
from kairyu_core.bus._connection import Bus
from kairyu_core.bus.errors import BusError
from kairyu_core.bus.topology import CONSUMED_BY, ConsumerSpec
from kairyu_core.settings import NatsSettings, ServiceSettings

log = logging.getLogger(__name__)
_RETRY_MAX_S = 30.0  # while NATS is unreachable, try at least this often
_RETRY_FIRST_S = 0.5


async def ensure(bus: Bus, services: Sequence[str]) -> None:
    """Create or update the streams (events, dead letters) and the consumers of `services`."""
    await bus.ensure_stream()
    for service in services:
        if service in CONSUMED_BY:
            spec = ConsumerSpec.of_service(service, bus.stream.subjects)
            await bus.ensure_consumer(spec)
            log.debug("consumer %s on %s is in place", spec.durable, bus.stream.name)


async def set_up(settings: NatsSettings, services: Sequence[str], *, name: str) -> None:
    """Create or update the stream and the declared consumers of `services` once."""
    admin = settings.model_copy(update={"manage_topology": True})
    async with await Bus.connect(admin, name=name) as bus:
        await ensure(bus, services)
    log.info("stream %s and the consumers of %s are in place", admin.stream, list(services))


async def keep_set_up(
    settings: NatsSettings, services: Sequence[str], *, name: str, every_s: float
) -> None:
    """`set_up` now and every `every_s` seconds, for ever; failures are retried, never fatal."""
    admin = settings.model_copy(update={"manage_topology": True})
    bus: Bus | None = None
    delay = _RETRY_FIRST_S
    announce = True  # log the first success, and the first after failures
    try:
        while True:
            try:
                if bus is None:
                    bus = await Bus.connect(admin, name=name)
                await ensure(bus, services)
            except (BusError, nats.errors.Error, TimeoutError) as exc:
                log.warning("NATS set-up failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S, every_s)
                continue
            if announce or delay != _RETRY_FIRST_S:
                log.info("stream %s and the consumers of %s are in place", admin.stream, services)
            announce = False
            delay = _RETRY_FIRST_S
            await asyncio.sleep(every_s)
    finally:
        if bus is not None:
            await bus.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kairyu_core.bus.setup", description=__doc__)
    known = ["watcher", *CONSUMED_BY]
    parser.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help=f"services whose consumers to set up, of {', '.join(known)} (none: the stream only)",
    )
    parser.add_argument(
        "--every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep running and set up again every SECONDS, retrying while NATS is down "
        "(0: once, then exit)",
    )
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.services) - set(known)):
        parser.error(f"unknown services: {', '.join(unknown)}")
    if args.every < 0:
        parser.error("--every must be 0 or more")
    settings = ServiceSettings(service_name="kairyu-nats-setup")
    kairyu_logging.configure(settings.log, service=settings.service_name)
    if args.every > 0:
        name = settings.service_name
        asyncio.run(keep_set_up(settings.nats, args.services, name=name, every_s=args.every))
        return 0
    try:
        asyncio.run(set_up(settings.nats, args.services, name=settings.service_name))
    except BusError as exc:
        log.error("NATS set-up failed: %s", exc)  # noqa: TRY400 - the message says it all
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
