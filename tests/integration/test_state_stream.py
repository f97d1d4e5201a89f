"""The state stream on a real nats-server: latest value per object, tombstones, resubscribing.

What only NATS does: a follower's snapshot is the stream's last message per subject, so the
stream holds one message per object; a deleted object's tombstone expires, so the stream holds
the live objects only; and after a NATS restart a follower re-reads a fresh snapshot, so even a
purge it was never told of is not kept in its view for ever. What both transports must do alike
(order, dedupe, an informer's view and wake-ups, retries and dead letters, a killed follower, a
broker restart) is the contract suite's, test_bus_contract.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from bus_transports import pod, until

from kairyu_contracts.objectstate import ObjectKey, content_digest
from kairyu_core.bus import Bus, Change, Snapshot, StreamSpec
from kairyu_core.informing import Informer
from kairyu_core.view import View
from kairyu_localenv import LocalNats


async def put(bus: Bus, value: dict[str, Any]) -> ObjectKey:
    key = ObjectKey.of("Pod", value)
    await bus.put_state(key, value, digest=content_digest(value))
    return key


@pytest.fixture
async def informed(bus: Bus) -> AsyncIterator[Callable[[], tuple[View, list[str]]]]:
    tasks: list[asyncio.Task[None]] = []

    def start() -> tuple[View, list[str]]:
        view = View(["Pod"])
        woken: list[str] = []
        informer = Informer(bus, view, woken.extend)
        tasks.append(asyncio.create_task(informer.run()))
        return view, woken

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_follower_gets_the_latest_values_then_each_change(bus: Bus) -> None:
    a = await put(bus, pod("a", phase="Pending"))
    await put(bus, pod("a", phase="Running", version=2))  # replaces the first value
    b = await put(bus, pod("b"))
    follow = bus.follow_state("Pod")
    try:
        first = await asyncio.wait_for(anext(follow), 10)
        assert isinstance(first, Snapshot)
        assert set(first.values) == {a, b}
        assert first.values[a]["status"]["phase"] == "Running"
        await bus.delete_state(b, uid="uid-b")
        change = await asyncio.wait_for(anext(follow), 10)
        assert change == Change(b, None, None)
    finally:
        await follow.aclose()
    info = await bus.js.stream_info(bus.stream.state_stream)
    assert info.state.messages == 2  # one per object: a's latest value and b's tombstone


async def test_tombstones_expire_so_deleted_objects_do_not_pile_up(
    nats_server: LocalNats, stream_spec: StreamSpec
) -> None:
    spec = dataclasses.replace(stream_spec, tombstone_ttl_s=1.0)
    async with await Bus.connect(nats_server.url, name="pytest", stream=spec) as bus:
        await bus.create_streams()
        try:
            keys = [await put(bus, pod(f"p{i}")) for i in range(20)]
            for key in keys:
                await bus.delete_state(key, uid=f"uid-{key.name}")

            async def held() -> int:
                info = await bus.js.stream_info(spec.state_stream)
                return int(info.state.messages)

            assert await held() == 20
            deadline = asyncio.get_running_loop().time() + 15
            while await held() and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
            assert await held() == 0
        finally:
            await bus.delete_streams()


async def test_after_a_nats_restart_a_follower_takes_a_fresh_snapshot(
    bus: Bus, nats_server: LocalNats, informed: Callable[[], tuple[View, list[str]]]
) -> None:
    gone = await put(bus, pod("gone", workspace="wg"))
    await put(bus, pod("stays", workspace="ws"))
    view, woken = informed()
    await until(lambda: len(view) == 2)
    # A purge is never delivered to followers: this one learns of it only by re-reading.
    await bus.js.purge_stream(bus.stream.state_stream, subject=_subject(bus, gone))
    await asyncio.sleep(0.5)
    assert view.get(gone) is not None
    nats_server.restart()
    await until(lambda: bus.is_connected, timeout=20)
    await until(lambda: view.get(gone) is None, timeout=30)
    assert len(view) == 1
    assert woken[-1] == "ns/wg"


def _subject(bus: Bus, key: ObjectKey) -> str:
    return f"{bus.stream.subjects.prefix}.v1.state.pod.{key.namespace}.{key.name}"
