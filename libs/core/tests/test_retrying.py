"""retry_forever: what a service does while NATS or the apiserver cannot be reached yet."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kairyu_core.retrying import retry_forever


class UnreachableError(Exception):
    pass


async def test_a_call_is_retried_until_it_succeeds_and_each_wait_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    cleared: list[bool] = []

    async def connect(n: int) -> str:
        calls.append(n)
        if len(calls) < 4:
            raise UnreachableError(f"refused #{len(calls)}")
        return "connected"

    retrying = retry_forever(
        "connect",
        on=UnreachableError,
        first_s=0.001,
        max_s=0.004,
        before_sleep=lambda: cleared.append(True),
    )
    with caplog.at_level(logging.WARNING, logger="kairyu_core.retrying"):
        assert await retrying(connect, 7) == "connected"

    assert calls == [7, 7, 7, 7]
    assert len(cleared) == 3
    waits = [r.getMessage() for r in caplog.records]
    assert waits[0] == "connect failed (UnreachableError: refused #1); retrying in 0.0s"
    assert len(waits) == 3


async def test_another_error_ends_the_wait_at_once() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("a bug, not an outage")

    with pytest.raises(KeyError):
        await retry_forever("connect", on=UnreachableError, first_s=0.001)(broken)
    assert calls == 1


async def test_the_wait_grows_to_its_cap_and_a_cancellation_stops_it() -> None:
    delays: list[float] = []
    five = asyncio.Event()

    async def never() -> None:
        raise UnreachableError("down")

    retrying = retry_forever("connect", on=UnreachableError, first_s=0.001, max_s=0.004)
    original = retrying.sleep

    async def record(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 5:
            five.set()
        await original(seconds)  # type: ignore[misc]

    retrying.sleep = record  # type: ignore[assignment]
    task: asyncio.Task[None] = asyncio.create_task(retrying(never))
    await asyncio.wait_for(five.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert delays[:5] == [0.001, 0.002, 0.004, 0.004, 0.004]
