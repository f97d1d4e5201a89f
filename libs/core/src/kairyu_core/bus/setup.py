"""`python -m kairyu_core.bus.setup [--every S]`: the one component that creates the streams.

The streams (`<stream>_STATE`, `<stream>_DEADLETTER`, `topology.StreamSpec`) are configured here
and nowhere else: a service only checks that they exist and waits while they do not
(`Bus.wait_for_streams`). So two versions of kairyu side by side cannot undo each other's limits,
and under NATS authorization no service credential may create, change, purge or delete a stream;
only the admin identity this step uses may create and update them, never delete or purge.

The chart runs it as a native sidecar of each service pod (an init container with `restartPolicy:
Always`, without a startup probe, so it does not hold back the service's start), with `--every 30`
and, under authorization, the admin credentials mounted there alone. It sets the streams up at once
and then every 30 s, so a stream deleted later is back within one period; while NATS is unreachable
it retries with a capped backoff and never exits. `make dev`, the chaos test and the benchmarks run
it once before they start the services (`kairyu_localenv.__main__.start_services`); the test
fixtures call `Bus.create_streams`. Without `--every` it runs once and exits 1 on failure.

Settings come from the same KAIRYU_NATS__* variables as a service's. With KAIRYU_BUS=servicebus
it refuses to run (exit 2): Service Bus entities come from the ARM template (docs/bus.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

import nats.errors

from kairyu_core import logging as kairyu_logging
from kairyu_core.bus._connection import Bus
from kairyu_core.bus.outcomes import BusError
from kairyu_core.settings import NatsSettings, ServiceSettings

log = logging.getLogger(__name__)
_RETRY_MAX_S = 30.0  # while NATS is unreachable, try at least this often
_RETRY_FIRST_S = 0.5


async def set_up(settings: NatsSettings, *, name: str) -> None:
    """Create or update the streams once."""
    async with await Bus.connect(settings, name=name) as bus:
        await bus.create_streams()
        log.info("streams %s are in place", ", ".join(bus.stream.streams))


async def keep_set_up(settings: NatsSettings, *, name: str, every_s: float) -> None:
    """`set_up` now and every `every_s` seconds, for ever; failures are retried, never fatal."""
    bus: Bus | None = None
    delay = _RETRY_FIRST_S
    announce = True  # log the first success, and the first after failures
    try:
        while True:
            try:
                if bus is None:
                    bus = await Bus.connect(settings, name=name)
                await bus.create_streams()
            except (BusError, nats.errors.Error, TimeoutError) as exc:
                log.warning("NATS set-up failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S, every_s)
                continue
            if announce or delay != _RETRY_FIRST_S:
                log.info("streams %s are in place", ", ".join(bus.stream.streams))
            announce = False
            delay = _RETRY_FIRST_S
            await asyncio.sleep(every_s)
    finally:
        if bus is not None:
            await bus.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kairyu_core.bus.setup", description=__doc__)
    parser.add_argument(
        "--every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep running and set up again every SECONDS, retrying while NATS is down "
        "(0: once, then exit)",
    )
    args = parser.parse_args(argv)
    if args.every < 0:
        parser.error("--every must be 0 or more")
    if os.environ.get("KAIRYU_BUS", "nats") != "nats":
        # Checked before the settings, which would refuse a Service Bus without its group
        # first. Creating Service Bus entities takes the namespace's Manage right, which
        # nothing in the cluster holds: the ARM template creates them (docs/bus.md).
        parser.exit(2, "the set-up step is for NATS; Service Bus entities come from the template\n")
    settings = ServiceSettings(service_name="kairyu-nats-setup")
    kairyu_logging.configure(settings.log, service=settings.service_name)
    if args.every > 0:
        name = settings.service_name
        asyncio.run(keep_set_up(settings.nats, name=name, every_s=args.every))
        return 0
    try:
        asyncio.run(set_up(settings.nats, name=settings.service_name))
    except BusError as exc:
        log.error("NATS set-up failed: %s", exc)  # noqa: TRY400 - the message says it all
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
