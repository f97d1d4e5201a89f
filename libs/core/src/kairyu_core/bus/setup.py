"""`python -m kairyu_core.bus.setup [SERVICE …]`: create or update the stream and the consumers.

Under NATS authorization the services may not touch the stream or any consumer (a leaked service
credential must not be able to purge, rewrite or delete them); only one admin identity may create
and update them, and this is the step that uses it. The chart runs it as the init container of each
service pod, with the admin credentials mounted there alone: the stream and that service's
consumer are in place before the service starts, and a consumer deleted later is back as soon as
the service restarts (it exits when it finds its consumer gone). The admin identity may create
and update, never delete or purge.

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

from kairyu_core import logging as kairyu_logging
from kairyu_core.bus._connection import Bus
from kairyu_core.bus.errors import BusError
from kairyu_core.bus.topology import CONSUMED_BY, ConsumerSpec
from kairyu_core.settings import NatsSettings, ServiceSettings

log = logging.getLogger(__name__)


async def set_up(settings: NatsSettings, services: Sequence[str], *, name: str) -> None:
    """Create or update the stream and the declared consumers of `services` (idempotent)."""
    admin = settings.model_copy(update={"manage_topology": True})
    async with await Bus.connect(admin, name=name) as bus:
        await bus.ensure_stream()
        for service in services:
            if service in CONSUMED_BY:
                spec = ConsumerSpec.of_service(service, bus.stream.subjects)
                await bus.ensure_consumer(spec)
                log.info("consumer %s on %s is in place", spec.durable, bus.stream.name)
    log.info("stream %s is in place", admin.stream)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kairyu_core.bus.setup", description=__doc__)
    known = ["watcher", *CONSUMED_BY]
    parser.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help=f"services whose consumers to set up, of {', '.join(known)} (none: the stream only)",
    )
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.services) - set(known)):
        parser.error(f"unknown services: {', '.join(unknown)}")
    settings = ServiceSettings(service_name="kairyu-nats-setup")
    kairyu_logging.configure(settings.log, service=settings.service_name)
    try:
        asyncio.run(set_up(settings.nats, args.services, name=settings.service_name))
    except BusError as exc:
        log.error("NATS set-up failed: %s", exc)  # noqa: TRY400 - the message says it all
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
