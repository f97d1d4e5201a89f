"""The bus on a real nats-server: tracing across processes, dedupe, retries, dead letters, kills."""

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from kairyu_core.bus import (
    Bus,
    Consumer,
    ConsumerSpec,
    Delivery,
    PermanentError,
    StreamSpec,
    TemporaryError,
)
from kairyu_core.events import Event, WorkspaceObserved, WorkspaceRef
from kairyu_core.localenv import LocalNats
from kairyu_core.testing.bus import dead_letters
from kairyu_core.testing.plugin import unique

PEER = Path(__file__).with_name("bus_peer.py")
EVENTS = {WorkspaceObserved.event_name: WorkspaceObserved}
Handler = Callable[[Event, Delivery], Awaitable[None]]


def ref(uid: str = "uid-1", *, name: str = "ws", rv: str = "1") -> WorkspaceRef:
    return WorkspaceRef(namespace="ns", name=name, uid=uid, generation=1, resource_version=rv)


def consumer_spec(bus: Bus, durable: str = "svc", **overrides: Any) -> ConsumerSpec:
    return ConsumerSpec(
        durable=durable, filter_subjects=(bus.stream.subjects.all_events,), **overrides
    )


class Running:
    """A consumer running in a task of the test's loop."""

    def __init__(self, bus: Bus, handler: Handler, spec: ConsumerSpec | None) -> None:
        self.consumer = Consumer(
            bus, spec or consumer_spec(bus), service="svc", events=EVENTS, handler=handler
        )
        self.task = asyncio.create_task(self.consumer.run())

    async def stop(self) -> None:
        await self.consumer.stop(grace_s=1)
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def running(bus: Bus, handler: Handler, spec: ConsumerSpec | None = None) -> Running:
    return Running(bus, handler, spec)


@pytest.fixture
async def consumers() -> AsyncIterator[list[Running]]:
    started: list[Running] = []
    yield started
    for run in started:
        await run.stop()


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_trace_context_crosses_processes(
    bus: Bus,
    stream_spec: StreamSpec,
    nats_server: LocalNats,
    spans: InMemorySpanExporter,
    consumers: list[Running],
) -> None:
    received: list[Event] = []

    async def handle(event: Event, delivery: Delivery) -> None:
        received.append(event)

    consumers.append(await running(bus, handle))
    out = subprocess.run(
        [
            sys.executable,
            str(PEER),
            "publish",
            nats_server.url,
            stream_spec.name,
            stream_spec.subjects.prefix,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    producer = json.loads(out.stdout.splitlines()[-1])
    await until(lambda: len(received) == 1)
    await until(lambda: any(s.kind == SpanKind.CONSUMER for s in spans.get_finished_spans()))
    (consumer_span,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert f"{consumer_span.context.trace_id:032x}" == producer["trace_id"]
    assert consumer_span.parent is not None
    assert f"{consumer_span.parent.span_id:016x}" == producer["span_id"]
    assert producer["name"].endswith(" publish")
    assert consumer_span.name.endswith(" process")


async def test_duplicate_publish_is_dropped(bus: Bus, consumers: list[Running]) -> None:
    received: list[str] = []

    async def handle(event: Event, delivery: Delivery) -> None:
        received.append(event.message_id)

    event = WorkspaceObserved(workspace=ref())
    first = await bus.publish(event)
    second = await bus.publish(WorkspaceObserved(workspace=ref()))  # same object version, same fact
    assert (first.duplicate, second.duplicate) == (False, True)
    assert second.sequence == first.sequence
    consumers.append(await running(bus, handle))
    await until(lambda: len(received) == 1)
    await asyncio.sleep(1.0)
    assert received == [event.message_id]


async def test_nak_redelivers_after_the_requested_delay(bus: Bus, consumers: list[Running]) -> None:
    seen: list[float] = []

    async def handle(event: Event, delivery: Delivery) -> None:
        seen.append(time.monotonic())
        if delivery.num_delivered == 1:
            raise TemporaryError("not yet", delay=1.5)

    consumers.append(await running(bus, handle))
    await bus.publish(WorkspaceObserved(workspace=ref()))
    await until(lambda: len(seen) == 2)
    assert seen[1] - seen[0] >= 1.4
    await asyncio.sleep(1.0)
    assert len(seen) == 2, "acked after the retry: no further delivery"


async def test_permanent_failure_lands_on_the_dead_letter_subject_once(
    bus: Bus, consumers: list[Running]
) -> None:
    calls: list[int] = []

    async def handle(event: Event, delivery: Delivery) -> None:
        calls.append(delivery.num_delivered)
        raise PermanentError("preset nope is unknown", reason="UnknownPreset")

    consumers.append(await running(bus, handle))
    published = await bus.publish(WorkspaceObserved(workspace=ref()))
    await until(lambda: len(calls) == 1)
    letters = await dead_letters(bus)
    assert len(letters) == 1
    subject, headers, data = letters[0]
    assert subject == bus.stream.subjects.dead_letter(
        "svc", bus.stream.subjects.for_event(WorkspaceObserved(workspace=ref()))
    )
    assert headers["Kairyu-Dead-Letter-Reason"] == "UnknownPreset"
    assert "preset nope is unknown" in headers["Kairyu-Dead-Letter-Error"]
    assert WorkspaceObserved.model_validate_json(data).workspace == ref()
    assert published.sequence > 0
    await asyncio.sleep(1.0)
    assert calls == [1], "a terminated message is not redelivered"


async def test_malformed_message_is_dead_lettered_and_the_consumer_keeps_going(
    bus: Bus, consumers: list[Running], spans: InMemorySpanExporter
) -> None:
    handled: list[str] = []

    async def handle(event: Event, delivery: Delivery) -> None:
        handled.append(event.workspace.uid)

    consumers.append(await running(bus, handle))
    subject = bus.stream.subjects.for_event(WorkspaceObserved(workspace=ref()))
    await bus.publish_raw(subject, b'{"not": "an event"', headers={"Nats-Msg-Id": "garbage-1"})
    await bus.publish(WorkspaceObserved(workspace=ref("uid-good")))
    await until(lambda: handled == ["uid-good"])
    (letter,) = await dead_letters(bus)
    assert letter[1]["Kairyu-Dead-Letter-Reason"] == "MalformedEvent"
    assert letter[2] == b'{"not": "an event"'
    errors = [s for s in spans.get_finished_spans() if s.status.status_code == StatusCode.ERROR]
    assert errors
    assert "MalformedEvent" in (errors[0].status.description or "")


async def test_unexpected_errors_retry_with_backoff_then_dead_letter(
    bus: Bus, consumers: list[Running]
) -> None:
    calls: list[int] = []

    async def handle(event: Event, delivery: Delivery) -> None:
        calls.append(delivery.num_delivered)
        raise RuntimeError("bug")

    consumers.append(await running(bus, handle, consumer_spec(bus, max_deliver=2)))
    await bus.publish(WorkspaceObserved(workspace=ref()))
    await until(lambda: len(calls) == 2, timeout=15)
    letters = await dead_letters(bus, wait=2.0)
    assert [h["Kairyu-Dead-Letter-Reason"] for _, h, _ in letters] == ["MaxDeliveriesExceeded"]
    assert calls == [1, 2]


async def test_events_of_one_workspace_are_handled_in_order(
    bus: Bus, consumers: list[Running]
) -> None:
    order: list[str] = []
    active: set[str] = set()
    overlap: list[bool] = []

    async def handle(event: Event, delivery: Delivery) -> None:
        key = event.workspace.name
        overlap.append(key in active)
        active.add(key)
        await asyncio.sleep(0.05 * (int(event.workspace.resource_version) % 3))
        order.append(f"{key}:{event.workspace.resource_version}")
        active.discard(key)

    for rv in range(1, 9):
        await bus.publish(WorkspaceObserved(workspace=ref("uid-a", name="a", rv=str(rv))))
        await bus.publish(WorkspaceObserved(workspace=ref("uid-b", name="b", rv=str(rv))))
    consumers.append(await running(bus, handle))
    await until(lambda: len(order) == 16)
    for key in "ab":
        assert [o for o in order if o.startswith(key)] == [f"{key}:{rv}" for rv in range(1, 9)]
    assert not any(overlap), "two events of one workspace ran at the same time"


async def test_a_consumer_killed_mid_handling_loses_nothing(
    bus: Bus, stream_spec: StreamSpec, nats_server: LocalNats, consumers: list[Running]
) -> None:
    durable = unique("shared")
    with subprocess.Popen(
        [
            sys.executable,
            str(PEER),
            "consume",
            nats_server.url,
            stream_spec.name,
            stream_spec.subjects.prefix,
            durable,
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as peer:
        try:
            await bus.publish(WorkspaceObserved(workspace=ref("uid-crash")))
            line = await asyncio.wait_for(asyncio.to_thread(peer.stdout.readline), timeout=20)  # type: ignore[union-attr]
            assert json.loads(line) == {"handling": "uid-crash", "delivered": 1}
        finally:
            peer.kill()  # SIGKILL: no ack, no nak, no goodbye
    received: list[Delivery] = []

    async def handle(event: Event, delivery: Delivery) -> None:
        received.append(delivery)

    consumers.append(
        await running(bus, handle, consumer_spec(bus, durable=durable, ack_wait_s=2.0))
    )
    await until(lambda: len(received) == 1, timeout=15)
    assert received[0].num_delivered == 2
    await asyncio.sleep(0.5)  # the ack is asynchronous
    assert await bus.consumer_pending(durable) == (0, 0)


async def test_setup_is_idempotent_and_updates_in_place(bus: Bus) -> None:
    await bus.ensure_stream()
    await bus.ensure_consumer(consumer_spec(bus, max_deliver=3))
    await bus.ensure_consumer(consumer_spec(bus, max_deliver=5))  # a new release changes a setting
    info = await bus.js.consumer_info(bus.stream.name, "svc")
    assert info.config.max_deliver == 5


async def test_shutdown_hands_unfinished_work_back_at_once(
    bus: Bus, consumers: list[Running]
) -> None:
    started = asyncio.Event()

    async def stuck(event: Event, delivery: Delivery) -> None:
        started.set()
        await asyncio.Event().wait()

    first = await running(bus, stuck)
    await bus.publish(WorkspaceObserved(workspace=ref()))
    await asyncio.wait_for(started.wait(), 10)
    await first.stop()  # grace of 1 s, then cancel and release

    received: list[Delivery] = []

    async def handle(event: Event, delivery: Delivery) -> None:
        received.append(delivery)

    consumers.append(await running(bus, handle))
    began = time.monotonic()
    await until(lambda: len(received) == 1)
    assert time.monotonic() - began < 5, "released, not left to the 30 s ack_wait"
    assert received[0].num_delivered == 2


async def test_consumer_survives_a_nats_restart(
    bus: Bus, nats_server: LocalNats, consumers: list[Running]
) -> None:
    received: list[str] = []

    async def handle(event: Event, delivery: Delivery) -> None:
        received.append(event.workspace.uid)

    consumers.append(await running(bus, handle))
    await bus.publish(WorkspaceObserved(workspace=ref("before")))
    await until(lambda: received == ["before"])
    nats_server.restart()  # same port, same store: the stream and the consumer survive
    await until(lambda: bus.is_connected, timeout=20)
    await bus.publish(WorkspaceObserved(workspace=ref("after")))
    await until(lambda: received == ["before", "after"], timeout=20)


async def test_a_message_queued_behind_a_slow_one_is_not_handed_out_twice(
    bus: Bus, consumers: list[Running]
) -> None:
    seen: list[tuple[str, int]] = []

    async def handle(event: Event, delivery: Delivery) -> None:
        seen.append((event.workspace.resource_version, delivery.num_delivered))
        if event.workspace.resource_version == "1":
            await asyncio.sleep(5.0)  # well past the 2 s ack_wait; the heartbeat keeps both alive

    consumers.append(await running(bus, handle, consumer_spec(bus, ack_wait_s=2.0)))
    await bus.publish(WorkspaceObserved(workspace=ref(rv="1")))
    await bus.publish(WorkspaceObserved(workspace=ref(rv="2")))
    await until(lambda: len(seen) >= 2, timeout=15)
    await asyncio.sleep(2.5)
    assert seen == [("1", 1), ("2", 1)]
