"""The NATS connection and JetStream set-up: stream and consumers, created or updated in place."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
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
from kairyu_core.bus._redacting import redact
from kairyu_core.bus._statestream import (
    DELETED_HEADER,
    DIGEST_HEADER,
    Change,
    Snapshot,
    all_state_subjects,
    follow,
    raise_if_cancelled,
    state_subject,
)
from kairyu_core.bus.errors import BusError
from kairyu_core.bus.topology import ConsumerSpec, StreamSpec
from kairyu_core.events import Event
from kairyu_core.objectstate import JSON, Kind, ObjectKey
from kairyu_core.settings import NatsSettings

log = logging.getLogger(__name__)

# JetStream error codes: "stream name already in use with a different configuration", "consumer
# not found", "stream not found".
_STREAM_NAME_IN_USE = 10058
_CONSUMER_NOT_FOUND = 10014
_STREAM_NOT_FOUND = 10059
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
    """A connection to NATS with JetStream; the only object in kairyu that touches nats-py.

    With `manage_topology` the bus creates and updates the stream and consumers it is asked to
    ensure; without it (a service under NATS authorization, which may not change the stream) it
    only checks that they exist as declared, and says so when they do not.

    `topology_ready` is False while such a bus waits for its stream or consumer to be (re)created
    by the admin step; the service's /readyz reports it.
    """

    def __init__(self, client: Client, *, stream: StreamSpec, manage_topology: bool = True) -> None:
        self._nc = client
        self.js: JetStreamContext = client.jetstream()
        self.stream = stream
        self.manage_topology = manage_topology
        self.topology_ready = True
        self.reconnects = 0
        """Reconnects so far: followers of the state stream take a fresh snapshot after each."""

    @classmethod
    async def connect(
        cls, target: NatsSettings | str, *, name: str, stream: StreamSpec | None = None
    ) -> Self:
        """Connect and keep reconnecting for ever; a NATS restart is an outage, not a crash.

        `target` is the service's NATS settings (credentials, TLS, inbox prefix, stream limits),
        or a bare URL for tools and tests. Nothing logged or raised here shows a credential.
        """
        if isinstance(target, NatsSettings):
            url, options = target.url, _connect_options(target)
            stream = stream or StreamSpec.of_settings(target)
            manage = target.manage_topology
        else:
            url, options, manage = target, {}, True
        shown = redact(url)

        async def on_error(exc: Exception) -> None:
            log.warning("nats: %s", redact(str(exc)))

        async def on_disconnect() -> None:
            log.warning("nats: disconnected from %s", shown)

        bus: Bus | None = None

        async def on_reconnect() -> None:
            log.info("nats: reconnected to %s", shown)
            if bus is not None:
                bus.reconnects += 1

        try:
            client = await nats.connect(
                url,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                **options,
            )
        except Exception as exc:  # noqa: BLE001 - any failure to connect ends the same way
            # Not chained: nats-py's own exception may quote the URL it was given.
            raise BusError(f"cannot connect to NATS at {shown}: {redact(str(exc))}") from None
        bus = cls(client, stream=stream or StreamSpec(), manage_topology=manage)
        return bus

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
        """Create the stream or bring it to the declared configuration.

        Without `manage_topology`, only check that it exists. A NATS that answers but whose
        JetStream is not up yet (just after a restart: no responders, timeouts) is a BusError like
        any other outage, so callers wait for it instead of ending.
        """
        try:
            await self._ensure_stream()
        except BusError:
            raise
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"JetStream is not available: {type(exc).__name__} {exc}") from exc

    async def _ensure_stream(self) -> None:
        spec = self.stream
        if not self.manage_topology:
            try:
                await self.js.stream_info(spec.name)
            except NotFoundError as exc:
                raise BusError(
                    f"stream {spec.name} does not exist; the NATS admin step "
                    "(python -m kairyu_core.bus.setup) creates it"
                ) from exc
            return

        def limited(
            name: str, subject: str, *, max_age: float | None = spec.max_age_s, **limits: Any
        ) -> StreamConfig:
            """A file-backed stream kept by limits, with the spec's age and duplicate window."""
            return StreamConfig(
                name=name,
                subjects=[subject],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=max_age,
                duplicate_window=spec.duplicate_window_s,
                **limits,
            )

        # Dead letters have a stream of their own (StreamSpec.dead_letter_stream); an update in
        # place moves their subjects out of a stream of an older version first.
        events = limited(
            spec.name,
            spec.subjects.all_events,
            max_bytes=spec.max_bytes,
            max_msgs_per_subject=spec.max_msgs_per_subject,
            # When full, drop the oldest: refusing new events would stop every service until
            # max_age frees room, while a dropped old event is superseded by a later one (handlers
            # read the current state; the watcher's resync republishes every Workspace).
            discard=DiscardPolicy.OLD,
        )
        dead_letters = limited(
            spec.dead_letter_stream,
            spec.subjects.all_dead_letters,
            max_bytes=spec.dead_letter_max_bytes,
            max_msgs=spec.dead_letter_max_msgs,
            # When full, refuse: a flood of dead letters (a leaked service password may publish
            # its own) must not erase the earlier ones; the refused one is retried.
            discard=DiscardPolicy.NEW,
        )
        states = limited(
            spec.state_stream,
            all_state_subjects(spec.subjects.prefix),
            # The latest value per object, kept as long as the object lives (no max_age): a
            # subject is one object, and a new value replaces the old one.
            max_age=None,
            max_msgs_per_subject=1,
            max_bytes=spec.state_max_bytes,
            # When full, refuse: dropping the oldest would silently evict live objects' only
            # value (a stable Node, a Ready Workspace); a refused publish is kept by the watcher
            # and tried again, and says so in its log.
            discard=DiscardPolicy.NEW,
            # Tombstones expire by their own Nats-TTL header, so deleted objects do not pile up.
            allow_msg_ttl=True,
        )
        await self._add_or_update(events)
        await self._add_or_update(dead_letters)
        await self._add_or_update(states)

    async def _add_or_update(self, config: StreamConfig) -> None:
        try:
            await self.js.add_stream(config)
        except BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise BusError(f"cannot create stream {config.name}: {exc}") from exc
            await self.js.update_stream(config)

    async def delete_stream(self) -> None:
        """Remove the stream, its dead letters and everything in them (tests, `make dev` resets)."""
        await self.js.delete_stream(self.stream.name)
        with contextlib.suppress(NotFoundError):  # a stream of an older version has none
            await self.js.delete_stream(self.stream.dead_letter_stream)
        with contextlib.suppress(NotFoundError):
            await self.js.delete_stream(self.stream.state_stream)

    async def ensure_consumer(self, spec: ConsumerSpec) -> None:
        """Create the durable consumer or update it in place (JetStream's create is an upsert).

        Without `manage_topology`, only check that it exists with the declared filters.
        """
        if not self.manage_topology:
            await self._check_consumer(spec)
            return
        config = ConsumerConfig(
            durable_name=spec.durable,
            name=spec.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=spec.ack_wait_s,
            # JetStream never gives up on a message by itself: after its max_deliver it would stop
            # delivering without a trace. The bus counts deliveries instead and dead-letters
            # (unexpected errors) or keeps retrying with a capped backoff (TemporaryError).
            max_deliver=-1,
            max_ack_pending=spec.max_ack_pending,
            filter_subjects=list(spec.filter_subjects),
        )
        await self.js.add_consumer(self.stream.name, config)

    async def _check_consumer(self, spec: ConsumerSpec) -> None:
        try:
            info = await self.js.consumer_info(self.stream.name, spec.durable)
        except NotFoundError as exc:
            raise BusError(
                f"consumer {spec.durable} on {self.stream.name} does not exist; the NATS admin "
                "step (python -m kairyu_core.bus.setup) creates it"
            ) from exc
        config = info.config
        found = set(
            config.filter_subjects or ([config.filter_subject] if config.filter_subject else [])
        )
        if found != set(spec.filter_subjects):
            raise BusError(
                f"consumer {spec.durable} on {self.stream.name} filters {sorted(found)}, this "
                f"service expects {sorted(spec.filter_subjects)}: rerun the NATS admin step of "
                "this version"
            )

    async def restore_stream(self) -> bool:
        """Recreate the streams if one was deleted and this bus manages them; whether it did."""
        if not self.manage_topology:
            return False
        spec = self.stream
        for name in (spec.name, spec.dead_letter_stream, spec.state_stream):
            try:
                await self.js.stream_info(name)
            except NotFoundError as exc:
                if exc.err_code != _STREAM_NOT_FOUND:
                    return False
                log.warning("stream %s is gone; creating the streams again", name)
                await self.ensure_stream()
                return True
            except (nats.errors.Error, TimeoutError):
                return False  # NATS cannot tell now (restarting): nothing to conclude
        return False

    async def missing(self, durable: str) -> bool:
        """Whether the consumer (or its whole stream) is gone; False when NATS cannot tell now."""
        try:
            await self.js.consumer_info(self.stream.name, durable)
        except NotFoundError as exc:
            return exc.err_code in (_CONSUMER_NOT_FOUND, _STREAM_NOT_FOUND)
        except (nats.errors.Error, TimeoutError):
            return False
        return False

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

    async def put_state(self, key: ObjectKey, value: JSON, *, digest: str) -> Published:
        """Store `value` as the latest state of the object `key` (the watcher's write).

        The message id is the object's uid and resourceVersion: a retry of the same version is
        stored once, while a later version with an earlier content (A, B, A) is stored again.
        """
        meta = value.get("metadata") or {}
        headers = {
            "Nats-Msg-Id": f"{meta.get('uid')}/{meta.get('resourceVersion')}",
            DIGEST_HEADER: digest,
            "Content-Type": "application/json",
        }
        subject = state_subject(self.stream.subjects.prefix, key)
        payload = json.dumps(value, separators=(",", ":")).encode()
        return await self.publish_raw(subject, payload, headers=headers)

    async def delete_state(self, key: ObjectKey, *, uid: str | None) -> Published:
        """Replace the object's state with a tombstone that expires after `tombstone_ttl_s`."""
        headers = {
            "Nats-Msg-Id": f"{uid or key.path}/deleted",
            DELETED_HEADER: "true",
            "Nats-TTL": f"{int(self.stream.tombstone_ttl_s)}s",
        }
        subject = state_subject(self.stream.subjects.prefix, key)
        return await self.publish_raw(subject, b"", headers=headers)

    async def dead_letter_reconcile(
        self, service: str, key: str, *, reason: str, error: str
    ) -> Published:
        """Record that `service` gave up reconciling the Workspace `key` (namespace/name)."""
        namespace, _, name = key.partition("/")
        subjects = self.stream.subjects
        original = f"{subjects.prefix}.v1.workspace.reconcile.{namespace}.{name.replace('.', '_')}"
        headers = {
            "Nats-Msg-Id": f"{service}/{key}/{reason}/{time.time_ns()}",
            "Kairyu-Dead-Letter-Reason": reason,
            "Kairyu-Dead-Letter-Error": error[:1024],
            "Kairyu-Original-Subject": original,
            "Kairyu-Service": service,
        }
        return await self.publish_raw(
            subjects.dead_letter(service, original), key.encode(), headers=headers
        )

    async def state_stream_identity(self) -> str | None:
        """When the state stream was created (None: it is missing); a new value: it was replaced.

        Raises BusError while NATS cannot tell.
        """
        try:
            info = await self.js.stream_info(self.stream.state_stream)
        except NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"cannot read the state stream's info: {exc!r}") from exc
        return str(info.created)

    def follow_state(self, kind: Kind) -> AsyncGenerator[Snapshot | Change, None]:
        """A snapshot of every `kind` object's state, then each change (see `_statestream`)."""
        return follow(self, kind)

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
                    subject, payload, headers=headers, stream=self.stream.stream_of(subject)
                )
                raise_if_cancelled()  # nats-py's request may have swallowed a cancellation
                return Published(stream=ack.stream, sequence=ack.seq, duplicate=bool(ack.duplicate))
            except _TRANSIENT as exc:
                if delay is None:
                    raise BusError(
                        f"publish to {subject} failed, NATS unavailable: {exc!r}"
                    ) from exc
                log.info("publish to %s not acknowledged (%r); retry in %.1fs", subject, exc, delay)
                await asyncio.sleep(delay)
                if isinstance(exc, nats.errors.NoRespondersError):
                    await self.restore_stream()  # no responder: perhaps no stream any more
            except Exception as exc:
                raise BusError(f"publish to {subject} failed: {exc!r}") from exc
        raise AssertionError("unreachable")  # pragma: no cover


def _connect_options(settings: NatsSettings) -> dict[str, Any]:
    """nats.connect's keyword arguments for the credentials, TLS and inbox prefix in `settings`."""
    options: dict[str, Any] = {"inbox_prefix": settings.inbox_prefix}
    if settings.user is not None and settings.password is not None:
        options["user"] = settings.user
        options["password"] = settings.password.get_secret_value()
    if settings.creds_file is not None:
        options["user_credentials"] = str(settings.creds_file)
    tls_wanted = settings.url.startswith("tls://") or settings.tls_ca_file or settings.tls_cert_file
    if tls_wanted:
        try:
            context = ssl.create_default_context(
                cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None
            )
            if settings.tls_cert_file and settings.tls_key_file:
                context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
        except (OSError, ssl.SSLError) as exc:
            raise BusError(f"cannot load the NATS TLS files: {exc}") from exc
        options["tls"] = context
    return options
