"""The bus on a real nats-server: tracing across processes, dedupe, retries, dead letters, kills."""

import asyncio
import json
import logging
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import DiscardPolicy
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from kairyu_core import service
from kairyu_core.bus import (
    Bus,
    BusError,
    Consumer,
    ConsumerSpec,
    Delivery,
    PermanentError,
    StreamSpec,
    TemporaryError,
    setup,
)
from kairyu_core.events import Event, WorkspaceObserved, WorkspaceRef
from kairyu_core.localenv import LocalNats, certs
from kairyu_core.localenv.processes import free_port
from kairyu_core.settings import NatsSettings
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
    await bus.ensure_consumer(consumer_spec(bus, max_ack_pending=3))
    await bus.ensure_consumer(consumer_spec(bus, max_ack_pending=5))  # a new release changes it
    info = await bus.js.consumer_info(bus.stream.name, "svc")
    assert info.config.max_ack_pending == 5


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


async def test_a_temporary_failure_is_retried_past_max_deliver(
    bus: Bus, consumers: list[Running]
) -> None:
    """A TemporaryError longer than max_deliver tries (an apiserver outage) delays, never loses."""
    calls: list[int] = []

    async def handle(event: Event, delivery: Delivery) -> None:
        calls.append(delivery.num_delivered)
        if delivery.num_delivered < 3:
            raise TemporaryError("apiserver unavailable", delay=0.1)

    consumers.append(await running(bus, handle, consumer_spec(bus, max_deliver=1)))
    await bus.publish(WorkspaceObserved(workspace=ref()))
    await until(lambda: calls == [1, 2, 3], timeout=15)
    await asyncio.sleep(0.5)  # the ack is asynchronous
    assert await bus.consumer_pending("svc") == (0, 0)
    assert await dead_letters(bus, wait=0.2) == []


async def test_a_deleted_stream_and_consumer_come_back(bus: Bus, consumers: list[Running]) -> None:
    """Deleted under a running service (by hand, or a NATS store lost): both are recreated, and
    the next event is handled, instead of a consumer that fetches from nothing for ever."""
    received: list[str] = []

    async def handle(event: Event, delivery: Delivery) -> None:
        received.append(event.workspace.uid)

    consumers.append(await running(bus, handle))
    await bus.publish(WorkspaceObserved(workspace=ref("before")))
    await until(lambda: received == ["before"])
    await bus.delete_stream()  # and with it the consumer
    await bus.publish(WorkspaceObserved(workspace=ref("after")))
    await until(lambda: received == ["before", "after"], timeout=30)
    assert await bus.consumer_pending("svc") == (0, 0)


async def test_a_service_that_may_not_recreate_its_consumer_waits_for_the_setup_sidecar(
    bus: Bus, nats_server: LocalNats, stream_spec: StreamSpec
) -> None:
    """Under NATS authorization a service may not create consumers. When its consumer is deleted
    it stays alive and reports not ready (exiting would not help: a restarted container does not
    re-run init containers), and resumes consuming once the `nats-setup` sidecar's next round has
    recreated the consumer."""
    admin = NatsSettings(
        url=nats_server.url, stream=stream_spec.name, subject_prefix=stream_spec.subjects.prefix
    )
    await setup.set_up(admin, ["deployer"], name="admin")
    bound = await Bus.connect(admin.model_copy(update={"manage_topology": False}), name="bound")
    readiness = service.Readiness()
    readiness.bus = bound
    received: list[str] = []

    async def handle(event: Event, delivery: Delivery) -> None:
        received.append(event.workspace.uid)

    spec = ConsumerSpec.of_service("deployer", bound.stream.subjects)
    consumer = Consumer(
        bound, spec, service="deployer", events=EVENTS, handler=handle, verify_every_s=0.2
    )
    task = asyncio.create_task(consumer.run())
    sidecar: asyncio.Task[None] | None = None
    try:
        await bus.publish(WorkspaceObserved(workspace=ref("before")))
        await until(lambda: received == ["before"])
        assert readiness()
        await bus.js.delete_consumer(stream_spec.name, spec.durable)
        await until(lambda: not readiness())
        await bus.publish(WorkspaceObserved(workspace=ref("while-gone")))
        await asyncio.sleep(1.0)  # several verify periods: the service must not have given up
        assert not task.done(), task.exception()
        sidecar = asyncio.create_task(
            setup.keep_set_up(admin, ["deployer"], name="nats-setup", every_s=0.2)
        )
        await until(readiness, timeout=40)
        await bus.publish(WorkspaceObserved(workspace=ref("after")))
        # The recreated consumer delivers everything still in the stream (DeliverPolicy.ALL).
        await until(lambda: "while-gone" in received and "after" in received, timeout=40)
    finally:
        if sidecar is not None:
            sidecar.cancel()
            await asyncio.gather(sidecar, return_exceptions=True)
        await consumer.stop(grace_s=1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bound.close()


@pytest.mark.integration  # its own nats-server, started late
async def test_the_setup_sidecar_outlasts_a_nats_that_is_not_there_yet(tmp_path: Path) -> None:
    """The sidecar starts before NATS does (or during an outage): it keeps retrying instead of
    exiting, and sets the stream up as soon as NATS is there."""
    later = LocalNats(workdir=tmp_path, port=free_port())  # not started yet
    settings = NatsSettings(url=later.url, stream=unique("LATE").upper())
    sidecar = asyncio.create_task(
        setup.keep_set_up(settings, ["planner"], name="nats-setup", every_s=0.5)
    )
    try:
        await asyncio.sleep(1.5)
        assert not sidecar.done(), sidecar.exception()
        later.start()  # blocks the loop a moment; the sidecar just retries later
        try:
            spec = StreamSpec(name=settings.stream)
            async with await Bus.connect(later.url, name="look", stream=spec) as look:
                deadline = time.monotonic() + 30
                while await look.missing("kairyu-planner"):
                    assert time.monotonic() < deadline, "the sidecar never set up the consumer"
                    await asyncio.sleep(0.2)
        finally:
            later.stop()
    finally:
        sidecar.cancel()
        await asyncio.gather(sidecar, return_exceptions=True)


async def test_the_stream_is_bounded_and_drops_the_oldest(bus: Bus, nats_server: LocalNats) -> None:
    """Limits on size and per subject; a full subject drops its oldest event, publishing goes on."""
    small = StreamSpec(name=bus.stream.name, subjects=bus.stream.subjects, max_msgs_per_subject=2)
    async with await Bus.connect(nats_server.url, name="limits", stream=small) as limited:
        await limited.ensure_stream()
        for rv in ("1", "2", "3"):
            published = await limited.publish(WorkspaceObserved(workspace=ref(rv=rv)))
            assert not published.duplicate
        info = await limited.js.stream_info(bus.stream.name)
    assert info.config.max_bytes == StreamSpec().max_bytes
    assert info.state.messages == 2
    assert info.state.first_seq == 2


async def test_a_flood_of_dead_letters_cannot_push_events_out_of_the_stream(
    bus: Bus, nats_server: LocalNats
) -> None:
    """Any service may publish dead letters on its own subjects, so a leaked service password
    could publish many; they go to a stream of their own, and the events stay."""
    small = StreamSpec(name=bus.stream.name, subjects=bus.stream.subjects, max_bytes=64 * 1024)
    async with await Bus.connect(nats_server.url, name="flood", stream=small) as limited:
        await limited.ensure_stream()
        await limited.publish(WorkspaceObserved(workspace=ref("kept")))
        for n in range(200):  # 200 KiB of dead letters on distinct subjects, > the 64 KiB stream
            subject = small.subjects.dead_letter("kairyu-deployer", f"kairyu.v1.x.y.ns.w{n}")
            await limited.publish_raw(subject, b"x" * 1024, headers={"Nats-Msg-Id": f"f{n}"})
        events = await limited.js.stream_info(small.name)
        assert events.state.messages == 1
        assert events.state.first_seq == 1
        letters = await limited.js.stream_info(small.dead_letter_stream)
    assert letters.state.messages == 200
    assert letters.config.discard == DiscardPolicy.NEW


def printed(exc: BaseException) -> str:
    """The messages Python prints for an uncaught exception and its chain (not the source)."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        parts += traceback.format_exception_only(current)
        suppressed = current.__suppress_context__
        current = current.__cause__ or (None if suppressed else current.__context__)
    return "".join(parts)


async def test_credentials_never_reach_the_logs(
    nats_server: LocalNats, caplog: pytest.LogCaptureFixture
) -> None:
    """A URL with user:password (as the chart used to write it) is shown redacted on disconnect,
    reconnect and a failed start, in the log and in the error a service dies with."""
    secret = "s3cr3t-nats-password"
    url = nats_server.url.replace("nats://", f"nats://kairyu-deployer:{secret}@")
    caplog.set_level(logging.INFO, logger="kairyu_core.bus")
    bus = await Bus.connect(url, name="redaction")
    try:
        nats_server.restart()
        await until(lambda: "reconnected to" in caplog.text, timeout=20)
    finally:
        await bus.close()
    with pytest.raises(BusError) as failed:
        # A connection NATS refuses is retried for ever (NATS may start later); a URL nats-py
        # cannot use ends the start at once, with the URL in the error.
        await Bus.connect(f"nats://kairyu-deployer:{secret}@127.0.0.1:99999", name="x")
    shown = caplog.text + printed(failed.value)
    assert "disconnected from" in caplog.text
    assert secret not in shown
    assert "kairyu-deployer:" not in shown


async def test_tls_with_a_ca_bundle_and_a_client_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """tls:// with kairyu's CA bundle and a client certificate, against a server that requires
    both; without the client certificate the same server refuses the connection."""
    ca = certs.make_ca(tmp_path, "nats-ca")
    serving = certs.issue(
        ca, tmp_path, name="server", common_name="nats", ip_addresses=("127.0.0.1",), server=True
    )
    client = certs.issue(ca, tmp_path, name="client", common_name="kairyu-deployer")
    config = (
        f'tls {{ cert_file: "{serving.cert}", key_file: "{serving.key}", '
        f'ca_file: "{ca.cert}", verify: true }}\n'
    )
    with LocalNats(config=config, tls=True) as server:
        stream = StreamSpec(name=unique("TLS").upper().replace("-", ""))
        settings = NatsSettings(
            url=server.url,
            tls_ca_file=ca.cert,
            tls_cert_file=client.cert,
            tls_key_file=client.key,
            stream=stream.name,
        )
        async with await Bus.connect(settings, name="tls") as secure:
            await secure.ensure_stream()
            assert (await secure.publish(WorkspaceObserved(workspace=ref()))).sequence == 1
        # The server requires the client certificate: without it no connection comes up (the
        # bus keeps trying, as for any NATS that is not there yet), and the log says why.
        anonymous = settings.model_copy(update={"tls_cert_file": None, "tls_key_file": None})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(Bus.connect(anonymous, name="no-cert"), 3)
        assert "certificate required" in caplog.text


async def test_a_jetstream_that_does_not_answer_is_waited_for_not_fatal(tmp_path: Path) -> None:
    """An account without JetStream answers the JetStream API the way a NATS whose JetStream is
    not up yet does (just after a restart): not at all. That is an outage to wait for, a BusError
    (which service.connections retries, not ready meanwhile), not an error that ends a service or
    the planner's webhook with it."""
    server = LocalNats(
        workdir=tmp_path,
        config="accounts { PLAIN: { users: [{user: plain, password: plainpass}] } }",
    )
    server.start()
    try:
        url = server.url.replace("nats://", "nats://plain:plainpass@")
        bus = await Bus.connect(url, name="no-jetstream")
        try:
            with pytest.raises(BusError, match="JetStream is not available"):
                await bus.ensure_stream()
        finally:
            await bus.close()
    finally:
        server.stop()


async def test_a_shutdown_never_runs_two_messages_of_one_workspace_at_once(
    bus: Bus, consumers: list[Running]
) -> None:
    """stop() cancels the message queued behind a slow one of the same Workspace: the slow one
    is cancelled with it, and the queued one never starts (it goes back to NATS)."""
    running_now: list[str] = []
    overlaps: list[list[str]] = []
    started = asyncio.Event()

    async def handle(event: Event, delivery: Delivery) -> None:
        rv = event.workspace.resource_version
        if running_now:
            overlaps.append([*running_now, rv])
        running_now.append(rv)
        try:
            started.set()
            await asyncio.sleep(30)  # slow: still at work when the grace period ends
        finally:
            running_now.remove(rv)

    consumer = await running(bus, handle)
    await bus.publish(WorkspaceObserved(workspace=ref(rv="1")))
    await bus.publish(WorkspaceObserved(workspace=ref(rv="2")))
    await asyncio.wait_for(started.wait(), 10)
    await until(lambda: consumer.consumer._in_flight == 2)  # "2" waits behind "1"
    await consumer.consumer.stop(grace_s=0.2)
    await asyncio.sleep(0.5)  # a swallowed cancel would start "2" right here
    assert overlaps == []
    assert running_now == [], "a handler outlived stop()"
    consumer.task.cancel()
    await asyncio.gather(consumer.task, return_exceptions=True)
