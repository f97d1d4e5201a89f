"""The NATS connection and JetStream set-up: stream and consumers, created or updated in place."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import (
    BadRequestError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from opentelemetry import trace

from kairyu_core.bus import _tracing
from kairyu_core.bus.errors import BusError
from kairyu_core.bus.topology import ConsumerSpec, StreamSpec
from kairyu_core.events import Event

log = logging.getLogger(__name__)

# JetStream: "stream name already in use with a different configuration".
_STREAM_NAME_IN_USE = 10058
# Waits between publish attempts while NATS is unavailable: ~15 s in all, longer than a restart.
_PUBLISH_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0, 7.0)
_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    NoStreamResponseError,
    ServiceUnavailableError,
)


@dataclass(frozen=True)
class Published:
    """JetStream's answer to a publish."""

    stream: str
    sequence: int
    duplicate: bool


class Bus:
    """A connection to NATS with JetStream; the only object in kairyu that touches nats-py."""

    def __init__(self, client: Client, *, stream: StreamSpec) -> None:
        self._nc = client
        self.js: JetStreamContext = client.jetstream()
        self.stream = stream

    @classmethod
    async def connect(cls, url: str, *, name: str, stream: StreamSpec | None = None) -> Self:
        """Connect and keep reconnecting for ever; a NATS restart is an outage, not a crash."""

        async def on_error(exc: Exception) -> None:
            log.warning("nats: %s", exc)

        async def on_disconnect() -> None:
            log.warning("nats: disconnected from %s", url)

        async def on_reconnect() -> None:
            log.info("nats: reconnected to %s", url)

        try:
            client = await nats.connect(
                url,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
            )
        except Exception as exc:
            raise BusError(f"cannot connect to NATS at {url}: {exc}") from exc
        return cls(client, stream=stream or StreamSpec())

    @property
    def is_connected(self) -> bool:
        """Whether the connection is up now (it reconnects by itself after an outage)."""
        return bool(self._nc.is_connected)

    async def close(self) -> None:
        """Flush what was published and close."""
        if not self._nc.is_closed:
            await self._nc.drain()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def ensure_stream(self) -> None:
        """Create the stream, or bring an existing one to the declared configuration."""
        spec = self.stream
        config = StreamConfig(
            name=spec.name,
            subjects=[spec.subjects.all_events, spec.subjects.all_dead_letters],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=spec.max_age_s,
            duplicate_window=spec.duplicate_window_s,
        )
        try:
            await self.js.add_stream(config)
        except BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise BusError(f"cannot create stream {spec.name}: {exc}") from exc
            await self.js.update_stream(config)

    async def delete_stream(self) -> None:
        """Remove the stream and everything in it (tests, and `make dev` resets)."""
        await self.js.delete_stream(self.stream.name)

    async def ensure_consumer(self, spec: ConsumerSpec) -> None:
        """Create the durable consumer, or update it in place (JetStream's create is an upsert)."""
        config = ConsumerConfig(
            durable_name=spec.durable,
            name=spec.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=spec.ack_wait_s,
            max_deliver=spec.max_deliver,
            max_ack_pending=spec.max_ack_pending,
            filter_subjects=list(spec.filter_subjects),
        )
        await self.js.add_consumer(self.stream.name, config)

    async def consumer_pending(self, durable: str) -> tuple[int, int]:
        """(messages not yet delivered, messages delivered but not acknowledged) of a consumer."""
        try:
            info = await self.js.consumer_info(self.stream.name, durable)
        except NotFoundError as exc:
            raise BusError(f"no consumer {durable} on {self.stream.name}") from exc
        return info.num_pending or 0, info.num_ack_pending or 0

    async def publish(self, event: Event, *, headers: dict[str, str] | None = None) -> Published:
        """Publish an event inside a PRODUCER span, with Nats-Msg-Id and trace context."""
        subject = self.stream.subjects.for_event(event)
        with _tracing.tracer.start_as_current_span(
            f"{subject} publish", kind=trace.SpanKind.PRODUCER
        ) as span:
            span.set_attributes(
                {
                    "messaging.system": "nats",
                    "messaging.operation.type": "publish",
                    "messaging.destination.name": subject,
                    "messaging.message.id": event.message_id,
                    "kairyu.workspace": event.workspace.key,
                }
            )
            all_headers = {
                "Nats-Msg-Id": event.message_id,
                "Content-Type": "application/json",
                "Kairyu-Event": event.event_name,
                "Kairyu-Schema-Version": str(event.schema_version),
                **(headers or {}),
            }
            _tracing.inject(all_headers)
            return await self.publish_raw(
                subject, event.model_dump_json().encode(), headers=all_headers
            )

    async def publish_raw(
        self, subject: str, payload: bytes, *, headers: dict[str, str]
    ) -> Published:
        """Publish bytes as they are (dead letters, and tests that need malformed messages).

        While NATS restarts (reconnecting, JetStream recovering its streams) the publish is retried
        for a while; the Nats-Msg-Id makes a retry of a publish that did land a no-op.
        """
        for delay in (*_PUBLISH_RETRY_DELAYS_S, None):
            try:
                ack = await self.js.publish(
                    subject, payload, headers=headers, stream=self.stream.name
                )
                return Published(stream=ack.stream, sequence=ack.seq, duplicate=bool(ack.duplicate))
            except _TRANSIENT as exc:
                if delay is None:
                    raise BusError(
                        f"publish to {subject} failed, NATS unavailable: {exc!r}"
                    ) from exc
                log.info("publish to %s not acknowledged (%r); retry in %.1fs", subject, exc, delay)
                await asyncio.sleep(delay)
            except Exception as exc:
                raise BusError(f"publish to {subject} failed: {exc!r}") from exc
        raise AssertionError("unreachable")  # pragma: no cover
