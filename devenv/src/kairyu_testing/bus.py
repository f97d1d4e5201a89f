"""Test helpers that read the bus: the dead letters the services recorded."""

from __future__ import annotations

from kairyu_core.bus import Bus


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
