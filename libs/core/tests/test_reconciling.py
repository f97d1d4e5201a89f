"""The work queue and controller: coalescing, one reconcile per key at a time, backoff, give-up."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter

import pytest

from kairyu_core.bus import PermanentError, TemporaryError
from kairyu_core.reconciling import Controller


async def _until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls plain state the reconciles change
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _running(controller: Controller):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(controller.run())
    try:
        yield controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_triggers_of_a_waiting_key_merge_into_one_reconcile() -> None:
    seen: Counter[str] = Counter()
    release = asyncio.Event()

    async def reconcile(key: str) -> None:
        seen[key] += 1
        if key == "ns/blocker":
            await release.wait()

    controller = Controller("test", reconcile, workers=1)
    async with _running(controller):
        controller.enqueue("ns/blocker")
        await _until(lambda: seen["ns/blocker"] == 1)
        for _ in range(50):  # a burst of changes while the key waits behind the busy worker
            controller.enqueue("ns/a")
        release.set()
        await _until(lambda: seen["ns/a"] >= 1)
        await asyncio.sleep(0.1)
    assert seen["ns/a"] == 1


async def test_a_key_never_runs_twice_at_once_and_a_trigger_meanwhile_runs_it_again() -> None:
    running: Counter[str] = Counter()
    most = 0
    runs = 0
    first_started = asyncio.Event()
    release = asyncio.Event()

    async def reconcile(key: str) -> None:
        nonlocal most, runs
        running[key] += 1
        most = max(most, running[key])
        runs += 1
        first_started.set()
        await release.wait()
        running[key] -= 1

    controller = Controller("test", reconcile, workers=4)
    async with _running(controller):
        controller.enqueue("ns/a")
        await first_started.wait()
        controller.enqueue("ns/a")  # while it runs: must wait, then run once more
        controller.enqueue("ns/a")
        await asyncio.sleep(0.1)
        assert runs == 1
        release.set()
        await _until(lambda: runs == 2)
        await asyncio.sleep(0.1)
    assert most == 1
    assert runs == 2


async def test_requeue_after_looks_again_later() -> None:
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def reconcile(key: str) -> float | None:
        times.append(loop.time())
        return 0.2 if len(times) < 3 else None

    controller = Controller("test", reconcile)
    async with _running(controller):
        controller.enqueue("ns/a")
        await _until(lambda: len(times) == 3)
        await asyncio.sleep(0.4)
    assert len(times) == 3
    assert times[1] - times[0] >= 0.19
    assert times[2] - times[1] >= 0.19


async def test_temporary_errors_retry_with_a_growing_delay() -> None:
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def reconcile(key: str) -> None:
        times.append(loop.time())
        if len(times) < 4:
            raise TemporaryError("apiserver away", delay=0.05)

    controller = Controller("test", reconcile)
    async with _running(controller):
        controller.enqueue("ns/a")
        await _until(lambda: len(times) == 4, timeout=10)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.45  # at least the per-key backoff (0.5 s), more than the delay asked
    assert gaps[2] > gaps[0]


async def test_a_failing_key_is_given_up_and_recorded_after_the_limit_and_others_go_on() -> None:
    given_up: list[tuple[str, str]] = []
    seen: Counter[str] = Counter()

    async def reconcile(key: str) -> None:
        seen[key] += 1
        if key == "ns/bad":
            raise KeyError("odd data")

    async def on_give_up(key: str, reason: str, exc: BaseException) -> None:
        given_up.append((key, reason))

    controller = Controller(
        "test", reconcile, give_up_after=3, on_give_up=on_give_up, backoff_base_s=0.01
    )
    async with _running(controller):
        controller.enqueue(["ns/bad", "ns/good"])
        await _until(lambda: given_up)
        await asyncio.sleep(0.2)
    assert given_up == [("ns/bad", "ReconcileFailed")]
    assert seen["ns/bad"] == 3
    assert seen["ns/good"] == 1


@pytest.mark.parametrize("reason", ["UnknownPreset"])
async def test_a_permanent_error_is_given_up_at_once_until_the_key_changes(reason: str) -> None:
    given_up: list[str] = []
    seen: Counter[str] = Counter()

    async def reconcile(key: str) -> None:
        seen[key] += 1
        raise PermanentError("no such preset", reason=reason)

    async def on_give_up(key: str, why: str, exc: BaseException) -> None:
        given_up.append(why)

    controller = Controller("test", reconcile, on_give_up=on_give_up)
    async with _running(controller):
        controller.enqueue("ns/a")
        await _until(lambda: given_up)
        await asyncio.sleep(0.2)
        assert seen["ns/a"] == 1
        controller.enqueue("ns/a")  # a change of the Workspace: tried again
        await _until(lambda: seen["ns/a"] == 2)
    assert given_up == [reason, reason]
