"""The pull-consume loop: fetch, decode, run the handler, and end each message by the ack policy.

Messages for one Workspace run one after another in this process (per-key chains of tasks);
different Workspaces run concurrently. While a message is in flight its ack deadline is extended
with in-progress acks, so a slow handler is not redelivered to a second replica, while a crashed
process stops extending it and JetStream hands the message to another replica after ack_wait.

A consumer deleted under a running service (by hand, or with its stream) is noticed within
`verify_every_s`: a bus that manages the topology creates it again and goes on; one that may not
(NATS authorization) waits, with /readyz false (`Bus.topology_ready`), looking again with a capped
backoff until the admin step (the pod's `nats-setup` sidecar, every 30 s) has recreated it, then
binds again and resumes. The same wait happens at start when the consumer is not there yet. The
service neither exits (a restarted container would find the consumer just as missing) nor sits
connected but deaf without saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg
from opentelemetry import context, trace
from pydantic import ValidationError

from kairyu_core import metrics
from kairyu_core.bus import _tracing
from kairyu_core.bus._connection import Bus
from kairyu_core.bus.errors import BusError, PermanentError, TemporaryError
from kairyu_core.bus.topology import ConsumerSpec
from kairyu_core.events import Event

log = logging.getLogger(__name__)

_EVENT_TOKEN = 3  # <prefix>.v1.workspace.<event>.<namespace>.<name>
_MAX_BACKOFF_S = 60.0
_VERIFY_EVERY_S = 10.0  # how stale "the consumer exists" may be: one cheap CONSUMER.INFO per period
_WAIT_MAX_S = 30.0  # while the consumer is missing, look this often at least (admin step's period)


@dataclass(frozen=True)
class Delivery:
    """What a handler learns about the message besides the event."""

    subject: str
    num_delivered: int
    stream_sequence: int


Handler = Callable[[Event, Delivery], Awaitable[None]]


def backoff(num_delivered: int, *, base: float = 1.0) -> float:
    """Delay before the next try of a message that failed unexpectedly: 1, 2, 4 … 60 seconds."""
    return float(min(_MAX_BACKOFF_S, base * 2 ** max(0, num_delivered - 1)))


def retry_delay(requested: float, num_delivered: int) -> float:
    """Delay before the next try after a TemporaryError.

    What the handler asked for, growing like `backoff` while the failure lasts, never above 60 s
    (or the request, if larger).
    Temporary failures are retried without limit: an apiserver outage of an hour must delay
    events, not lose them, and the capped delay keeps the cost of waiting at one try a minute.
    """
    return max(requested, min(_MAX_BACKOFF_S, backoff(num_delivered)))


class Consumer:
    """Runs one handler over a durable pull consumer until stopped."""

    def __init__(
        self,
        bus: Bus,
        spec: ConsumerSpec,
        *,
        service: str,
        events: Mapping[str, type[Event]],
        handler: Handler,
        max_in_flight: int = 16,
        fetch_timeout_s: float = 1.0,
        verify_every_s: float = _VERIFY_EVERY_S,
    ) -> None:
        self._bus = bus
        self._spec = spec
        self._service = service
        self._events = dict(events)
        self._handler = handler
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._fetch_timeout = fetch_timeout_s
        self._verify_every = verify_every_s
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._unsettled: dict[int, Msg] = {}  # by id(): nats Msg objects are not hashable
        self._stopping = asyncio.Event()
        self._fetching = False
        self._fetch_loop_left = asyncio.Event()

    async def run(self) -> None:
        """Fetch and dispatch until `stop()`; survives NATS outages (the client reconnects).

        Under NATS authorization, a missing consumer is waited for (not ready meanwhile) instead of
        ending the run.
        """
        while not self._stopping.is_set():
            if not await self._until_consumer_exists():
                return
            if await self._fetch_until_gone():
                return

    async def _until_consumer_exists(self) -> bool:
        """Ensure (or, without the right to create, wait for) the consumer; False when stopped."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await self._bus.ensure_consumer(self._spec)
            except BusError as exc:
                if self._bus.manage_topology:
                    raise
                self._bus.topology_ready = False
                log.warning("%s; waiting %.1fs (not ready meanwhile)", exc, delay)
            except (nats.errors.Error, TimeoutError) as exc:  # NATS restarting: look again
                log.warning("cannot look up consumer %s yet: %s", self._spec.durable, exc)
            else:
                if not self._bus.topology_ready:
                    log.info("consumer %s is back; resuming", self._spec.durable)
                self._bus.topology_ready = True
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, _WAIT_MAX_S)
        return False

    async def _fetch_until_gone(self) -> bool:
        """The fetch loop; True when stopped, False when the consumer is gone for good here.

        "For good here": this bus may not recreate it; the caller waits for it and binds again.
        """
        sub = await self._bus.js.pull_subscribe_bind(
            durable=self._spec.durable, stream=self._bus.stream.name
        )
        self._fetching = True
        self._fetch_loop_left.clear()
        verified = time.monotonic()
        try:
            while not self._stopping.is_set():
                if time.monotonic() - verified >= self._verify_every:
                    if not await self._recreate_if_missing():
                        return False
                    verified = time.monotonic()
                free = await self._wait_for_free_slots()
                try:
                    msgs = await sub.fetch(free, timeout=self._fetch_timeout)
                except TimeoutError:
                    # nats.errors.TimeoutError, and also the bare asyncio one nats-py raises when
                    # the fetch deadline passed before its second pull request (a busy loop).
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.NoServersError):
                    if self._stopping.is_set():
                        break
                    raise
                except nats.errors.Error as exc:
                    log.warning("fetch from %s failed, retrying: %s", self._spec.durable, exc)
                    await asyncio.sleep(1.0)
                    verified = 0.0  # perhaps the consumer is gone: look before the next fetch
                    continue
                for msg in msgs:
                    if self._stopping.is_set():  # fetched while stopping: hand it straight back
                        with contextlib.suppress(Exception):
                            await msg.nak()
                        continue
                    await self._slots.acquire()
                    self._dispatch(msg)
        finally:
            self._fetching = False
            self._fetch_loop_left.set()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return True

    async def _recreate_if_missing(self) -> bool:
        """Recreate a consumer (and stream) that was deleted; False if this bus may not."""
        if not await self._bus.missing(self._spec.durable):
            return True
        if not self._bus.manage_topology:
            self._bus.topology_ready = False
            log.warning(
                "consumer %s on %s was deleted; waiting for the NATS admin step to recreate it",
                self._spec.durable,
                self._bus.stream.name,
            )
            return False
        log.warning(
            "consumer %s on %s was deleted; creating it again",
            self._spec.durable,
            self._bus.stream.name,
        )
        try:
            await self._bus.restore_stream()
            await self._bus.ensure_consumer(self._spec)
        except (nats.errors.Error, TimeoutError) as exc:  # NATS flapping: try again next period
            log.warning("could not recreate consumer %s yet: %s", self._spec.durable, exc)
        return True

    async def _wait_for_free_slots(self) -> int:
        await self._slots.acquire()
        self._slots.release()
        return max(1, self._max_in_flight - self._in_flight)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop fetching, give in-flight handlers `grace_s` seconds, then release the rest."""
        self._stopping.set()
        # Let the fetch loop leave first, so that nothing released below is fetched again here.
        if self._fetching:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._fetch_loop_left.wait(), self._fetch_timeout + 2.0)
        pending = list(self._chains.values())
        if pending:
            _, still_running = await asyncio.wait(pending, timeout=grace_s)
            for task in still_running:
                task.cancel()
            await asyncio.gather(*still_running, return_exceptions=True)
        # Cancelled work goes back at once, instead of after ack_wait.
        for msg in list(self._unsettled.values()):
            with contextlib.suppress(Exception):
                await msg.nak()
        self._unsettled.clear()

    # ------------------------------------------------------------------ per message
    def _dispatch(self, msg: Msg) -> None:
        key = ".".join(msg.subject.split(".")[_EVENT_TOKEN + 1 :]) or msg.subject
        previous = self._chains.get(key)
        self._unsettled[id(msg)] = msg
        self._in_flight += 1
        task = asyncio.create_task(self._after(previous, msg))
        self._chains[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            self._in_flight -= 1
            self._slots.release()
            if self._chains.get(key) is done:
                del self._chains[key]

        task.add_done_callback(forget)

    async def _after(self, previous: asyncio.Task[None] | None, msg: Msg) -> None:
        # The heartbeat starts at once: a message waiting behind a slow one of the same Workspace
        # must not reach its ack deadline and be handed out a second time.
        heartbeat = asyncio.create_task(self._keep_alive(msg))
        try:
            if previous is not None:
                await self._behind(previous)
            await self._process(msg)
        finally:
            heartbeat.cancel()

    @staticmethod
    async def _behind(previous: asyncio.Task[None]) -> None:
        """Wait for the predecessor of the same key, whatever it ends with.

        A cancel aimed at this message (stop() cancels only the last task of each key) is passed
        down the chain and waited for, then re-raised: this message is not handled, and no
        predecessor is left running once stop() has gathered the chain's tail. Swallowing it
        would run this handler beside a predecessor still at work: two of one Workspace at once.
        """
        try:
            await asyncio.wait({previous})  # never raises the predecessor's own exception
        except asyncio.CancelledError:
            previous.cancel()
            await asyncio.gather(previous, return_exceptions=True)
            raise

    async def _keep_alive(self, msg: Msg) -> None:
        interval = max(0.5, self._spec.ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _process(self, msg: Msg) -> None:
        meta = msg.metadata
        delivery = Delivery(
            subject=msg.subject,
            num_delivered=meta.num_delivered,
            stream_sequence=meta.sequence.stream,
        )
        token = context.attach(_tracing.extract(msg.headers))
        try:
            with _tracing.tracer.start_as_current_span(
                f"{msg.subject} process",
                kind=trace.SpanKind.CONSUMER,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                span.set_attributes(
                    {
                        "messaging.system": "nats",
                        "messaging.operation.type": "process",
                        "messaging.destination.name": msg.subject,
                        "messaging.consumer.group.name": self._spec.durable,
                        "messaging.message.delivery_count": delivery.num_delivered,
                        "messaging.message.id": (msg.headers or {}).get("Nats-Msg-Id", ""),
                    }
                )
                await self._run_handler(msg, delivery, span)
        finally:
            context.detach(token)

    async def _run_handler(self, msg: Msg, delivery: Delivery, span: trace.Span) -> None:
        name = (msg.headers or {}).get("Kairyu-Event", "unknown")
        began = time.perf_counter()
        outcome = "ok"
        try:
            outcome = await self._handle_and_settle(msg, delivery, span)
        finally:
            metrics.HANDLER_SECONDS.labels(self._service, name).observe(time.perf_counter() - began)
            metrics.EVENTS.labels(self._service, name, outcome).inc()

    async def _handle_and_settle(self, msg: Msg, delivery: Delivery, span: trace.Span) -> str:
        """Run the handler and ack, nak or dead-letter; the outcome for the metrics."""
        try:
            event = self._decode(msg)
            await self._handler(event, delivery)
        except asyncio.CancelledError:
            raise  # neither ack nor nak: stop() releases it, or JetStream redelivers after ack_wait
        except TemporaryError as exc:
            delay = retry_delay(exc.delay, delivery.num_delivered)
            log.info("retrying %s in %.1fs: %s", msg.subject, delay, exc)
            await self._settle(msg, "nak", delay=delay)
            return "retried"
        except PermanentError as exc:
            span.set_status(trace.StatusCode.ERROR, f"{exc.reason}: {exc}")
            span.record_exception(exc)
            log.error("giving up on %s (%s): %s", msg.subject, exc.reason, exc)  # noqa: TRY400 - expected, not a bug
            await self._dead_letter(msg, reason=exc.reason, error=str(exc))
            return "dead_lettered"
        except Exception as exc:
            span.set_status(trace.StatusCode.ERROR, str(exc))
            span.record_exception(exc)
            if delivery.num_delivered >= self._spec.max_deliver:
                log.exception(
                    "giving up on %s after %d deliveries", msg.subject, delivery.num_delivered
                )
                await self._dead_letter(msg, reason="MaxDeliveriesExceeded", error=repr(exc))
                return "dead_lettered"
            delay = backoff(delivery.num_delivered)
            log.exception("handler failed on %s, retrying in %.0fs", msg.subject, delay)
            await self._settle(msg, "nak", delay=delay)
            return "failed"
        await self._settle(msg, "ack")
        return "ok"

    def _decode(self, msg: Msg) -> Event:
        tokens = msg.subject.split(".")
        name = tokens[_EVENT_TOKEN] if len(tokens) > _EVENT_TOKEN else ""
        event_type = self._events.get(name)
        if event_type is None:
            raise PermanentError(
                f"no event type {name!r} known to {self._service}", reason="UnknownEvent"
            )
        try:
            return event_type.model_validate_json(msg.data)
        except ValidationError as exc:
            raise PermanentError(f"malformed {name} event: {exc}", reason="MalformedEvent") from exc

    async def _settle(self, msg: Msg, action: str, *, delay: float | None = None) -> None:
        try:
            if action == "ack":
                await msg.ack()
            elif action == "nak":
                await msg.nak(delay=delay)
            else:
                await msg.term()
        except Exception:  # noqa: BLE001 - a lost ack only means a redelivery; the handler is idempotent
            log.warning("could not %s %s; it will be redelivered", action, msg.subject)
        finally:
            self._unsettled.pop(id(msg), None)

    async def _dead_letter(self, msg: Msg, *, reason: str, error: str) -> None:
        """Copy the message to the dead-letter subject, then term it; if the copy fails, nak."""
        subject = self._bus.stream.subjects.dead_letter(self._service, msg.subject)
        delivery_seq = msg.metadata.sequence.stream
        headers = {
            **{k: v for k, v in (msg.headers or {}).items() if k != "Nats-Msg-Id"},
            # One dead letter per original message, even if it is terminated more than once.
            "Nats-Msg-Id": f"deadletter/{self._service}/{msg.metadata.stream}/{delivery_seq}",
            "Kairyu-Original-Subject": msg.subject,
            "Kairyu-Dead-Letter-Reason": reason,
            "Kairyu-Dead-Letter-Error": error[:1024],
            "Kairyu-Service": self._service,
        }
        try:
            await self._bus.publish_raw(subject, msg.data, headers=headers)
        except BusError:
            log.exception("could not dead-letter %s; retrying later", msg.subject)
            await self._settle(msg, "nak", delay=backoff(msg.metadata.num_delivered))
            return
        await self._settle(msg, "term")
