"""The NATS connection: states, dead letters, and the streams that hold them.

The streams are created and updated by one component only, the set-up step
(`kairyu_core.bus.setup`, `Bus.create_streams`); a service only checks that they exist
(`Bus.wait_for_streams`), so no two versions of kairyu ever fight over a stream's configuration
and, under NATS authorization, no service credential may change one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import nats
import nats.errors
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
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

from kairyu_contracts.objectstate import JSON, Kind, ObjectKey
from kairyu_core.bus._redacting import redact
from kairyu_core.bus._statestream import (
    DELETED_HEADER,
    DIGEST_HEADER,
    WAKE_HEADER,
    Change,
    Snapshot,
    follow,
    raise_if_cancelled,
    state_subject,
)
from kairyu_core.bus.outcomes import BusError
from kairyu_core.bus.topology import StreamSpec
from kairyu_core.retrying import retry_forever
from kairyu_core.settings import NatsSettings

log = logging.getLogger(__name__)

# JetStream error code: "stream name already in use with a different configuration".
_STREAM_NAME_IN_USE = 10058
_WAIT_MAX_S = 30.0  # while a stream is missing, look at least this often (the set-up's period)
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

    `topology_ready` is False while the bus waits for its streams to be (re)created by the
    set-up step (`wait_for_streams`); the service's /readyz reports it.
    """

    def __init__(self, client: Client, *, stream: StreamSpec) -> None:
        self._nc = client
        self.js: JetStreamContext = client.jetstream()
        self.stream = stream
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
        else:
            url, options = target, {}
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
        bus = cls(client, stream=stream or StreamSpec())
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

    async def check_streams(self) -> None:
        """Raise BusError unless every stream exists (this bus never creates one).

        A NATS that answers but whose JetStream is not up yet (just after a restart: no
        responders, timeouts) is a BusError like a missing stream, so callers wait for it.
        """
        for name in self.stream.streams:
            try:
                await self.js.stream_info(name)
            except NotFoundError as exc:
                raise BusError(
                    f"stream {name} does not exist; the NATS set-up step "
                    "(python -m kairyu_core.bus.setup) creates it"
                ) from exc
            except (nats.errors.Error, TimeoutError) as exc:
                raise BusError(f"JetStream is not available: {type(exc).__name__} {exc}") from exc

    async def wait_for_streams(self) -> None:
        """Return once every stream exists; until then log why and look again, not ready.

        The wait is 0.5 s doubling to 30 s, the set-up step's period in the chart.
        """

        def not_ready() -> None:
            self.topology_ready = False

        await retry_forever(
            "looking for the streams (not ready meanwhile)",
            on=BusError,
            max_s=_WAIT_MAX_S,
            before_sleep=not_ready,
        )(self.check_streams)
        if not self.topology_ready:
            log.info("the streams %s are there; going on", ", ".join(self.stream.streams))
        self.topology_ready = True

    async def create_streams(self) -> None:
        """Create the streams or bring them to the declared configuration (the set-up step).

        A NATS whose JetStream is not up yet is a BusError like any other outage.
        """
        try:
            for config in self._stream_configs():
                await self._add_or_update(config)
        except BusError:
            raise
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"JetStream is not available: {type(exc).__name__} {exc}") from exc

    def _stream_configs(self) -> list[StreamConfig]:
        spec = self.stream

        def limited(name: str, subject: str, **limits: Any) -> StreamConfig:
            """A file-backed stream kept by limits, with the spec's duplicate window."""
            return StreamConfig(
                name=name,
                subjects=[subject],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                duplicate_window=spec.duplicate_window_s,
                **limits,
            )

        states = limited(
            spec.state_stream,
            spec.subjects.all_states,
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
        dead_letters = limited(
            spec.dead_letter_stream,
            spec.subjects.all_dead_letters,
            max_age=spec.dead_letter_max_age_s,
            max_bytes=spec.dead_letter_max_bytes,
            max_msgs=spec.dead_letter_max_msgs,
            # When full, refuse: a flood of dead letters (a leaked service password may publish
            # its own) must not erase the earlier ones.
            discard=DiscardPolicy.NEW,
        )
        return [states, dead_letters]

    async def _add_or_update(self, config: StreamConfig) -> None:
        try:
            await self.js.add_stream(config)
        except BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise BusError(f"cannot create stream {config.name}: {exc}") from exc
            await self.js.update_stream(config)

    async def delete_streams(self) -> None:
        """Remove the streams and everything in them (tests, `make dev` resets)."""
        for name in self.stream.streams:
            with contextlib.suppress(NotFoundError):
                await self.js.delete_stream(name)

    async def put_state(
        self, key: ObjectKey, value: JSON, *, digest: str, wake: str | None = None
    ) -> Published:
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
        if wake is not None:
            headers[WAKE_HEADER] = wake
        subject = state_subject(self.stream.subjects.prefix, key)
        payload = orjson.dumps(value)
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
        original = subjects.reconcile(namespace, name)
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

    async def serve_snapshots(
        self, values_of: Callable[[Kind], Mapping[ObjectKey, tuple[JSON, str, str | None]]]
    ) -> None:
        """Wait until cancelled: on NATS no follower asks the watcher for a snapshot.

        The state stream is the snapshot (its last message per subject); this exists so that the
        watcher runs the same code on both transports (`ServiceBusBus.serve_snapshots` answers).
        """
        del values_of
        await asyncio.Event().wait()

    async def broadcast_snapshot(
        self, kind: Kind, values: Mapping[ObjectKey, tuple[JSON, str, str | None]]
    ) -> None:
        """Nothing to do: followers on NATS read their snapshot from the state stream itself."""
        del kind, values

    async def publish_raw(
        self, subject: str, payload: bytes, *, headers: dict[str, str]
    ) -> Published:
        """Publish bytes as they are (states, dead letters, and tests' malformed messages).

        While NATS restarts (reconnecting, JetStream recovering its streams) the publish is retried
        for a while; the Nats-Msg-Id makes a retry of a publish that did land a no-op.
        """
        try:
            stream = self.stream.stream_of(subject)
        except ValueError as exc:
            raise BusError(str(exc)) from exc
        for delay in (*_PUBLISH_RETRY_DELAYS_S, None):
            try:
                ack = await self.js.publish(subject, payload, headers=headers, stream=stream)
                raise_if_cancelled()  # nats-py's request may have swallowed a cancellation
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
