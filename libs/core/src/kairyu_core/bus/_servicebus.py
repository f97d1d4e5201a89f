"""The bus on Azure Service Bus: the same contract as the NATS `Bus`, for teams without NATS.

docs/bus.md ("Azure Service Bus: the second transport") says how kairyu's families map onto
Service Bus entities and why the watcher is the source of snapshots. This module is the I/O around
the pure parts (`servicebus_topology` names the entities, `servicebus_states` is the wire format
and the follower's state machine); following a kind lives in `_servicebus_following`.

The SDK opens a connection per sender or receiver (about half a second each way), so senders are
kept for the bus's life, one per entity. The SDK's own retries are off (`retry_total=0`): it
retries a refused key too, which would turn a wrong key into a long silence, so kairyu retries
what is transient itself, as the NATS bus does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender
from azure.servicebus.exceptions import (
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    OperationTimeoutError,
    ServiceBusAuthenticationError,
    ServiceBusAuthorizationError,
    ServiceBusCommunicationError,
    ServiceBusConnectionError,
    ServiceBusError,
    ServiceBusServerBusyError,
)
from pydantic import SecretStr

from kairyu_contracts.objectstate import JSON, KINDS, Kind, ObjectKey
from kairyu_core.bus._connection import Published
from kairyu_core.bus._redacting import redact
from kairyu_core.bus._servicebus_following import follow, properties_of
from kairyu_core.bus._statestream import Change, Snapshot
from kairyu_core.bus.contract import SnapshotSource, StateBus
from kairyu_core.bus.outcomes import BusError, BusSettingsError
from kairyu_core.bus.servicebus_states import (
    KIND_PROPERTY,
    OutMessage,
    snapshot_messages,
    state_message,
    tombstone_message,
)
from kairyu_core.bus.servicebus_topology import (
    EVERY_READER,
    ServiceBusTopology,
    servicebus_topology,
)
from kairyu_core.bus.snapshot_pacing import SnapshotPacer
from kairyu_core.bus.topology import FOLLOWS, RECONCILERS, StreamSpec, identity
from kairyu_core.retrying import retry_forever
from kairyu_core.settings import ServiceBusSettings

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

log = logging.getLogger(__name__)

READER_PROPERTY = "kairyu-reader"
"""On a snapshot request: the identity of the follower that asks (its subscription's name)."""
REQUEST_ID_PROPERTY = "kairyu-request-id"
"""On a snapshot request: the id the answer's markers carry (`kairyu-snapshot-id`)."""
DEAD_LETTER_REASON = "kairyu-dead-letter-reason"
DEAD_LETTER_ERROR = "kairyu-dead-letter-error"
DEAD_LETTER_SERVICE = "kairyu-service"
DEAD_LETTER_KEY = "kairyu-key"
_ERROR_MAX = 1024  # as on NATS: a dead letter says why, it does not carry a whole traceback
STATE_STREAM_IDENTITY = "servicebus"
# Waits between send attempts while Service Bus is unreachable: ~15 s in all, as on NATS.
_SEND_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0, 7.0)
_WAIT_MAX_S = 30.0  # while an entity is missing, look at least this often
_REQUEST_POLL_S = 1.0  # how long one receive of snapshot requests waits
_REQUEST_BATCH = 10
_MAX_BACKOFF_S = 30.0
_REFUSAL_LOG_EVERY_S = 60.0
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex, as `request_snapshot` makes it
TRANSIENT: tuple[type[ServiceBusError], ...] = (
    ServiceBusConnectionError,
    ServiceBusCommunicationError,
    OperationTimeoutError,
    ServiceBusServerBusyError,
)
_DENIED = (ServiceBusAuthenticationError, ServiceBusAuthorizationError)


class _EntitiesMissingError(BusError):
    """An entity or its role is not there yet, or the namespace is unreachable: worth waiting."""


class ServiceBusBus:
    """kairyu's bus on one Service Bus namespace, as the service `service` (e.g. "deployer").

    It has the NATS `Bus`'s surface (`put_state`, `follow_state`, `dead_letter_reconcile`, the
    stream checks), and the watcher's side of snapshots, which NATS does not need:
    `serve_snapshots` and `broadcast_snapshot`.
    """

    def __init__(
        self, client: ServiceBusClient, *, service: str, topology: ServiceBusTopology
    ) -> None:
        self.client = client
        self.service = service
        self.identity = identity(service)
        """This service's name on the bus: its subscriptions' name, the `to` of its snapshots."""
        self.topology = topology
        self.topology_ready = True
        self.reconnects = 0
        """Sessions reopened after a failure so far (each is followed by a fresh snapshot)."""
        self._healthy = True
        self._closed = False
        self._senders: dict[str, ServiceBusSender] = {}
        # One lock per entity: a snapshot is sent whole, with no change of its kind between its
        # batches (a change sent before a later batch would be overwritten by an older value).
        self._send_locks: dict[str, asyncio.Lock] = {}
        self._owned_credential: AsyncTokenCredential | None = None
        self.refused_requests = 0
        """Messages on the requests queue dropped so far as not a request one may make."""
        self._refusal_logged_at = -_REFUSAL_LOG_EVERY_S
        self.waits_for_roles = False
        """Signed in with Entra ID: a refusal at start is waited out, since roles take minutes to
        reach Service Bus after the template assigns them. A refused shared key is final."""

    @classmethod
    async def connect(
        cls,
        target: ServiceBusSettings | str,
        *,
        service: str,
        credential: AsyncTokenCredential | None = None,
        topology: ServiceBusTopology | None = None,
    ) -> Self:
        """A bus on the namespace `target` names; nothing is opened until it is used.

        `target` is the settings, or a bare connection string for tools and tests. With a
        namespace name, `credential` (an Entra ID token credential) signs in; without one the
        bus makes azure-identity's `DefaultAzureCredential` (in a pod with workload identity:
        the service's own identity) and closes it with itself. A wrong key or credential shows
        at the first use, `wait_for_streams` at every service's start, as a BusError.
        """
        if isinstance(target, str):
            target = ServiceBusSettings(connection_string=SecretStr(target))
        owned: AsyncTokenCredential | None = None
        topology = topology or servicebus_topology(StreamSpec(name=target.stream))
        try:
            if target.connection_string is not None:
                client = ServiceBusClient.from_connection_string(
                    target.connection_string.get_secret_value(), retry_total=0
                )
            else:
                assert target.fully_qualified_namespace is not None  # noqa: S101 - validated
                if credential is None:
                    owned = credential = _default_credential()
                client = ServiceBusClient(
                    target.fully_qualified_namespace, credential, retry_total=0
                )
        except ValueError as exc:
            # Not chained: the SDK's message may quote the connection string, key included.
            msg = f"bad Service Bus connection string: {redact(str(exc))}"
            raise BusSettingsError(msg) from None
        bus = cls(client, service=service, topology=topology)
        bus._owned_credential = owned
        bus.waits_for_roles = target.connection_string is None
        return bus

    @property
    def is_connected(self) -> bool:
        """Whether the last send or receive got through (Service Bus has no one connection)."""
        return self._healthy and not self._closed

    def mark(self, *, healthy: bool) -> None:
        """Record how the last operation went (for `is_connected`; the follower calls it too)."""
        self._healthy = healthy

    async def close(self) -> None:
        """Close the senders and the client (and the credential, if `connect` made it)."""
        if self._closed:
            return
        self._closed = True
        senders, self._senders = list(self._senders.values()), {}
        for sender in senders:
            with contextlib.suppress(ServiceBusError):
                await sender.close()
        await self.client.close()
        if self._owned_credential is not None:
            await self._owned_credential.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- the entities --------------------------------------------------------------------------

    def _used_subscriptions(self) -> list[tuple[str, str]]:
        if self.service == "watcher":
            return []
        return [
            (sub.topic, sub.name)
            for kind in FOLLOWS.get(self.service, ())
            for sub in [self.topology.subscription(self.service, kind)]
        ]

    def _used_senders(self) -> list[str]:
        """The topics and queues this service sends to."""
        if self.service == "watcher":
            return [t.name for t in self.topology.topics]
        names = [self.topology.requests.name] if FOLLOWS.get(self.service) else []
        if self.service in RECONCILERS:
            names.append(self.topology.dead_letters.name)
        return names

    async def check_streams(self) -> None:
        """Raise BusError unless every entity this service uses exists (none is created here).

        Senders are opened (and kept); a subscription is looked at through its dead-letter
        sub-queue, because opening the subscription itself would lock its session away from
        this service's own follower.
        """
        checks = [self._check_sender(name) for name in self._used_senders()]
        checks += [
            self._check_subscription(topic, name) for topic, name in self._used_subscriptions()
        ]
        if self.service == "watcher":
            checks.append(self._check_queue_readable(self.topology.requests.name))
        await asyncio.gather(*checks)

    async def _check_sender(self, entity: str) -> None:
        async with self._guard(entity):
            await self._sender(entity).create_message_batch()  # opens the link

    async def _check_subscription(self, topic: str, name: str) -> None:
        async with (
            self._guard(f"{topic}/subscriptions/{name}"),
            self.client.get_subscription_receiver(
                topic, name, sub_queue=ServiceBusSubQueue.DEAD_LETTER
            ) as receiver,
        ):
            await receiver.peek_messages(max_message_count=1)

    async def _check_queue_readable(self, queue: str) -> None:
        async with (
            self._guard(queue),
            self.client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as r,
        ):
            await r.peek_messages(max_message_count=1)

    @contextlib.asynccontextmanager
    async def _guard(self, entity: str) -> AsyncGenerator[None, None]:
        """Turn the SDK's errors while using `entity` into kairyu's."""
        try:
            yield
        except MessagingEntityNotFoundError as exc:
            raise _EntitiesMissingError(_missing(entity)) from exc
        except _DENIED as exc:
            self.mark(healthy=False)
            if self.waits_for_roles:
                raise _EntitiesMissingError(
                    f"Service Bus refused this service's identity on {entity}: its role "
                    f"assignment may not be in place yet (the template's, minutes to take "
                    f"effect): {exc}"
                ) from exc
            raise BusError(f"Service Bus refused this service's key or credential: {exc}") from exc
        except TRANSIENT as exc:
            self.mark(healthy=False)
            raise _EntitiesMissingError(f"Service Bus is not reachable: {exc!r}") from exc
        except ServiceBusError as exc:
            raise BusError(f"Service Bus failed on {entity}: {exc!r}") from exc
        self.mark(healthy=True)

    async def wait_for_streams(self) -> None:
        """Return once every entity exists; until then log why and look again, not ready.

        A refused shared key is not waited on: it raises BusError at once. A refused Entra ID
        identity is (`waits_for_roles`).
        """

        def not_ready() -> None:
            self.topology_ready = False

        await retry_forever(
            "looking for the Service Bus entities (not ready meanwhile)",
            on=_EntitiesMissingError,
            max_s=_WAIT_MAX_S,
            before_sleep=not_ready,
        )(self.check_streams)
        if not self.topology_ready:
            log.info("the Service Bus entities are there; going on")
        self.topology_ready = True

    async def create_streams(self) -> None:
        """Check the entities only: on Service Bus the set-up template or an admin creates them.

        Creating them takes the namespace's Manage right, which no service should hold; the
        chart's template creates them with ARM (docs/bus.md).
        """
        log.info("Service Bus entities are created by the set-up template; checking them only")
        await self.check_streams()

    async def state_stream_identity(self) -> str | None:
        """Always the same: there is no state stream on Service Bus that could be replaced.

        On NATS a new value means the stream was recreated and the watcher republishes every
        state; here nothing keeps states, and a starting watcher sends every snapshot anyway.
        """
        return STATE_STREAM_IDENTITY

    # --- sending -------------------------------------------------------------------------------

    def _sender(self, entity: str) -> ServiceBusSender:
        sender = self._senders.get(entity)
        if sender is None:
            # Topics and queues are both plain addresses to a sender.
            sender = self._senders[entity] = self.client.get_queue_sender(entity)
        return sender

    async def _drop_sender(self, entity: str) -> None:
        sender = self._senders.pop(entity, None)
        if sender is not None:
            with contextlib.suppress(ServiceBusError):
                await sender.close()

    def _lock(self, entity: str) -> asyncio.Lock:
        return self._send_locks.setdefault(entity, asyncio.Lock())

    async def send(self, entity: str, messages: Sequence[OutMessage]) -> Published:
        """Send `messages` in order to a topic or queue, retrying for ~15 s while it is unreachable.

        A retry sends every message again: the entities' duplicate detection (message ids)
        keeps each once.
        """
        async with self._lock(entity):
            return await self._send_locked(entity, messages)

    async def _send_locked(self, entity: str, messages: Sequence[OutMessage]) -> Published:
        sdk_messages = [_to_sdk(message) for message in messages]
        for delay in (*_SEND_RETRY_DELAYS_S, None):
            try:
                await self._send_batches(self._sender(entity), sdk_messages)
            except TRANSIENT as exc:
                self.mark(healthy=False)
                await self._drop_sender(entity)  # a fresh link next time
                if delay is None:
                    raise BusError(
                        f"send to {entity} failed, Service Bus unreachable: {exc!r}"
                    ) from exc
                log.info("send to %s failed (%r); retry in %.1fs", entity, exc, delay)
                await asyncio.sleep(delay)
            except MessagingEntityNotFoundError as exc:
                await self._drop_sender(entity)
                raise BusError(_missing(entity)) from exc
            except ServiceBusError as exc:
                await self._drop_sender(entity)
                raise BusError(f"send to {entity} failed: {exc!r}") from exc
            else:
                self.mark(healthy=True)
                return Published(stream=entity, sequence=0, duplicate=False)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _send_batches(sender: ServiceBusSender, messages: list[ServiceBusMessage]) -> None:
        """Send in as few batches as the entity's message size allows, in order."""
        batch, count = await sender.create_message_batch(), 0
        for message in messages:
            try:
                batch.add_message(message)
            except MessageSizeExceededError:
                if count == 0:
                    raise  # one message alone is too large: the caller logs and keeps it
                await sender.send_messages(batch)
                batch, count = await sender.create_message_batch(), 0
                batch.add_message(message)
            count += 1
        if count:
            await sender.send_messages(batch)

    async def put_state(
        self, key: ObjectKey, value: JSON, *, digest: str, wake: str | None = None
    ) -> Published:
        """Send `value` as the latest state of the object `key` to its kind's topic (the watcher).

        The message id is the object's uid and resourceVersion: a retry of the same version is
        stored once by the topic's duplicate detection, as on NATS.
        """
        topic = self.topology.topic_of(key.kind).name
        return await self.send(topic, [state_message(key, value, digest=digest, wake=wake)])

    async def delete_state(self, key: ObjectKey, *, uid: str | None) -> Published:
        """Tell every reader of the kind that the object was deleted (nothing to expire here)."""
        topic = self.topology.topic_of(key.kind).name
        return await self.send(topic, [tombstone_message(key, uid=uid)])

    async def dead_letter_reconcile(
        self, service: str, key: str, *, reason: str, error: str
    ) -> Published:
        """Record that `service` gave up reconciling the Workspace `key` (namespace/name)."""
        message = OutMessage(
            body=key.encode(),
            properties={
                DEAD_LETTER_REASON: reason,
                DEAD_LETTER_ERROR: error[:_ERROR_MAX],
                DEAD_LETTER_SERVICE: service,
                DEAD_LETTER_KEY: key,
            },
            message_id=f"{service}/{key}/{reason}/{time.time_ns()}",
            session_id="",
            subject="deadletter",
        )
        return await self.send(self.topology.dead_letters.name, [message])

    # --- snapshots -----------------------------------------------------------------------------

    async def request_snapshot(self, kind: Kind) -> str:
        """Ask the watcher for `kind`'s snapshot, addressed to this service; the request's id."""
        request_id = uuid.uuid4().hex
        message = OutMessage(
            body=b"",
            properties={
                KIND_PROPERTY: kind,
                READER_PROPERTY: self.identity,
                REQUEST_ID_PROPERTY: request_id,
            },
            message_id=request_id,
            session_id="",
            subject="snapshot-request",
        )
        await self.send(self.topology.requests.name, [message])
        return request_id

    @property
    def serves_snapshots(self) -> bool:
        """True: nothing on Service Bus keeps states, the watcher sends every snapshot."""
        return True

    async def broadcast_snapshot(self, kind: Kind, values_of: SnapshotSource) -> None:
        """Send every reader of `kind` the watcher's values (a starting watcher, once per kind).

        This replaces the NATS watcher's start-up read of the state stream: nothing on Service
        Bus keeps states, so every follower's view is refreshed from the watcher's. `values_of`
        is called under the topic's send lock (see `_send_snapshot`).
        """
        await self._send_snapshot(kind, values_of, to=EVERY_READER)

    async def _send_snapshot(
        self, kind: Kind, values_of: SnapshotSource, *, to: str, snapshot_id: str | None = None
    ) -> Published:
        topic = self.topology.topic_of(kind).name
        async with self._lock(topic):
            # Read under the topic's lock: no change of the kind is sent between this read and
            # the snapshot, so none older than the snapshot can follow it.
            messages = snapshot_messages(
                kind, dict(values_of(kind)), to=to, snapshot_id=snapshot_id or uuid.uuid4().hex
            )
            return await self._send_locked(topic, messages)

    async def serve_snapshots(self, values_of: SnapshotSource) -> None:
        """Answer followers' snapshot requests until cancelled (the watcher's side).

        Each request is answered in the kind's topic, addressed to the follower that asked, at
        most once per 5 s for a reader and kind (`snapshot_pacing`: sooner ones
        are held and answered together). A request that is not one (no known kind, or a reader
        that does not read it) is dropped, with a warning at most once a minute. While Service
        Bus is unreachable this backs off and receives again; it never returns.
        """
        pacer = SnapshotPacer()
        failures = 0
        while True:
            try:
                async with self.client.get_queue_receiver(
                    self.topology.requests.name, prefetch_count=0
                ) as receiver:
                    while True:
                        requests = await receiver.receive_messages(
                            max_message_count=_REQUEST_BATCH, max_wait_time=_REQUEST_POLL_S
                        )
                        self.mark(healthy=True)
                        failures = 0
                        for request in requests:
                            await self._answer(receiver, request, values_of, pacer)
                        for reader, kind, request_id in pacer.due(now=time.monotonic()):
                            await self._send_snapshot(
                                kind, values_of, to=reader, snapshot_id=request_id
                            )
                            log.info("sent the held %s snapshot %s to %s", kind, request_id, reader)
            except (ServiceBusError, BusError) as exc:
                self.mark(healthy=False)
                failures += 1
                delay = min(_MAX_BACKOFF_S, 0.25 * 2**failures)
                log.warning("serving snapshots failed (%r); again in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def _answer(
        self,
        receiver: ServiceBusReceiver,
        request: ServiceBusReceivedMessage,
        values_of: SnapshotSource,
        pacer: SnapshotPacer,
    ) -> None:
        properties = properties_of(request)
        kind = properties.get(KIND_PROPERTY)
        reader = properties.get(READER_PROPERTY)
        request_id = properties.get(REQUEST_ID_PROPERTY, "")
        topic = self.topology.topic_of(kind).name if kind in KINDS else None
        # Only a reader of the kind may be sent its snapshot: a request naming "*" or anyone else
        # would have the watcher send a whole kind for nobody, or reset every reader's view.
        readers = {s.name for s in self.topology.subscriptions if s.topic == topic}
        # The id becomes part of every answer's message ids, which Service Bus caps at 128
        # characters: only the form `request_snapshot` makes is taken, so a long or odd one
        # cannot make the answer fail (and the watcher with it, again at each redelivery).
        if kind not in KINDS or reader not in readers or not _REQUEST_ID.fullmatch(request_id):
            # Dropped, not dead-lettered: dead letters never expire and nobody reads that
            # sub-queue, so whoever may send requests could fill the queue's 1 GB with them and
            # stop every follower's snapshots. Logged at most once a minute, with a count.
            self.refused_requests += 1
            now = time.monotonic()
            if now - self._refusal_logged_at >= _REFUSAL_LOG_EVERY_S:
                self._refusal_logged_at = now
                log.warning(
                    "dropped %d message(s) on %s that are not snapshot requests; the latest: "
                    "kind %r, reader %r, id %r",
                    self.refused_requests,
                    self.topology.requests.name,
                    kind,
                    reader,
                    request_id,
                )
            await receiver.complete_message(request)
            return
        assert kind is not None  # noqa: S101 - in KINDS
        if pacer.ask(reader, kind, request_id, now=time.monotonic()):
            await self._send_snapshot(kind, values_of, to=reader, snapshot_id=request_id)
            log.info("sent the %s snapshot %s to %s", kind, request_id, reader)
        else:
            # Held, not lost: answered when the interval ends (a restarted watcher, which
            # forgets it, is asked again by the follower within 15 s).
            log.info("holding the %s snapshot %s for %s: one went lately", kind, request_id, reader)
        await receiver.complete_message(request)

    def follow_state(self, kind: Kind) -> AsyncGenerator[Snapshot | Change, None]:
        """A snapshot of every `kind` object's state, then each change (`_servicebus_following`).

        After a lost session or an outage it asks again, and a fresh snapshot follows.
        """
        return follow(self, kind)


def _missing(entity: str) -> str:
    return (
        f"the Service Bus entity {entity} does not exist; the set-up template (or an admin) "
        "creates it"
    )


def _default_credential() -> AsyncTokenCredential:
    """The pod's workload identity when the webhook injected it; else azure-identity's default.

    In a pod, only the workload identity is wanted: `DefaultAzureCredential` would fall back to
    the node's managed identity when the webhook did not run, and act as another principal. Out
    of a pod (a developer's shell) the default chain finds `az login` and the like.
    """
    # Imported here: only a bus signed in with Entra ID needs azure-identity.
    from azure.identity.aio import (  # noqa: PLC0415
        DefaultAzureCredential,
        WorkloadIdentityCredential,
    )

    if os.environ.get("AZURE_FEDERATED_TOKEN_FILE"):
        return WorkloadIdentityCredential()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        msg = (
            "no workload identity in this pod (AZURE_FEDERATED_TOKEN_FILE is not set): label the "
            "pod azure.workload.identity/use=true and annotate its ServiceAccount with the "
            "identity's client id (the chart does both with global.servicebus.auth "
            "workloadIdentity)"
        )
        raise BusSettingsError(msg)
    return DefaultAzureCredential()


def _to_sdk(message: OutMessage) -> ServiceBusMessage:
    return ServiceBusMessage(
        message.body,
        application_properties=dict(message.properties),  # type: ignore[arg-type]
        message_id=message.message_id,
        # Queues' messages have no session: the empty string means none.
        session_id=message.session_id or None,
        subject=message.subject,
    )


def _satisfies_the_contract(bus: ServiceBusBus) -> StateBus:
    """Never called: mypy checks here that the Service Bus bus is a `StateBus`."""
    return bus
