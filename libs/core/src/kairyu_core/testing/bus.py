"""Test helpers that read the bus the way a service would: every event, and the dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kairyu_core.bus import Bus, Consumer, ConsumerSpec, Delivery
from kairyu_core.events import ALL_EVENTS, Event


class Inbox:
    """Everything published on the test's stream, as the services would receive it."""

    def __init__(self, bus: Bus) -> None:
        self.events: list[Event] = []
        spec = ConsumerSpec(durable="inbox", filter_subjects=(bus.stream.subjects.all_events,))
        events = {e.event_name: e for e in ALL_EVENTS}
        self.consumer = Consumer(bus, spec, service="inbox", events=events, handler=self._keep)
        self.task = asyncio.create_task(self.consumer.run())

    async def _keep(self, event: Event, delivery: Delivery) -> None:
        self.events.append(event)

    async def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 20.0) -> Event:
        async def first() -> Event:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                await asyncio.sleep(0.1)

        return await asyncio.wait_for(first(), timeout)

    async def close(self) -> None:
        await self.consumer.stop(grace_s=1)
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def dead_letters(bus: Bus, wait: float = 1.0) -> list[tuple[str, dict[str, str], bytes]]:
    """The dead letters on the test's stream: (subject, headers, payload)."""
    sub = await bus.js.pull_subscribe(
        bus.stream.subjects.all_dead_letters, stream=bus.stream.dead_letter_stream
    )
    got: list[tuple[str, dict[str, str], bytes]] = []
    try:
        while True:
            msgs = await sub.fetch(10, timeout=wait)
            got.extend((m.subject, dict(m.headers or {}), m.data) for m in msgs)
    except TimeoutError:  # nats' TimeoutError subclasses it: nothing more to fetch
        pass
    await sub.unsubscribe()
    return got
