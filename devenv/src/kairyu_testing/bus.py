"""Test helpers around the bus: the dead letters the services recorded, the SDK's garbage."""

from __future__ import annotations

import gc

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


def collect_sdk_garbage() -> None:
    """Run the garbage collector now, at the end of a Service Bus test's fixture.

    azure-servicebus 7.15 leaves the sockets of connections the broker dropped, or that it did
    not close, to the garbage collector. Collected later, their finalizers' reports may run
    inside a compile (an import at the end of the session), whose reports parse code again:
    Python 3.11's AST recursion check then fails the whole run ("AST constructor recursion depth
    mismatch"). Collected here, they are reported in the test that made them, where
    pyproject.toml's filterwarnings ignores exactly these finalizers.
    """
    gc.collect()
