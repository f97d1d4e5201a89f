"""The AMQP 1.0 side of the local Service Bus endpoint: proton events in, `Namespace` changes out.

It handles what the real `azure-servicebus` SDK does on the wire: the CBS `put-token` exchange on
`$cbs` (SAS tokens checked against the configured keys), sender links to a queue or topic (single
messages and batches), receiver links on a queue, a subscription or a dead-letter sub-queue
(peek-lock with lock tokens as delivery tags, or receive-and-delete), session receivers (the
`com.microsoft:session-filter` and `com.microsoft:locked-until-utc` handshake), settlement by
disposition echoed back settled, and the `$management` request/response operations the SDK's
receiver, sender and session call. Runs on proton's single reactor thread: nothing here locks.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from proton import (
    Condition,
    Connection,
    Data,
    Delivery,
    Disposition,
    Event,
    Handler,
    Link,
    Message,
    Session,
    Terminus,
    symbol,
)
from proton._reactor import Acceptor
from proton.reactor import Container

from kairyu_localenv import servicebus_wire as wire
from kairyu_localenv.servicebus_entities import (
    EntityNotFoundError,
    LockLostError,
    MessageStore,
    Namespace,
    Outcome,
    SessionCannotBeLockedError,
)
from kairyu_localenv.servicebus_management import (
    LOCK_LOST,
    NOT_FOUND,
    MgmtReply,
    management,
    text,
)

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

CBS = "$cbs"
MANAGEMENT_SUFFIX = "/$management"
TICK_S = 0.05
"""How often locks, schedules and time-to-live are checked: well under any lock duration."""
INCOMING_CREDIT = 100
"""Credit each sender link gets, topped up as it is used (Service Bus grants a similar window)."""
DEFAULT_SESSION_WAIT_S = 60.0
"""How long a next-available-session receiver waits for a session when it sets no timeout."""

# Service Bus's answers, by the names the SDK maps to its exceptions
UNAUTHORIZED = "amqp:unauthorized-access"
NOT_ALLOWED = "amqp:not-allowed"
MESSAGE_SIZE_EXCEEDED = "amqp:link:message-size-exceeded"
SESSION_CANNOT_BE_LOCKED = "com.microsoft:session-cannot-be-locked"
TIMEOUT = "com.microsoft:timeout"
MESSAGE_NOT_FOUND = "com.microsoft:message-not-found"


@dataclass
class _Receiver:
    """A client's receiver link: the broker delivers from `store` on it."""

    store: MessageStore
    owner: str
    presettled: bool
    session_id: str | None = None
    tokens: dict[Delivery, uuid.UUID] = field(default_factory=dict)
    """The lock token of each unsettled delivery (proton cannot give a tag back as bytes)."""


@dataclass
class _Waiting:
    """A next-available-session receiver with no session free yet."""

    store: MessageStore
    owner: str
    deadline: float


@dataclass
class _Request:
    """A client's sender link to `$cbs`, `<entity>/$management` or an entity."""

    kind: str  # "cbs" | "management" | "entity"
    path: str


@dataclass(eq=False)
class Broker(Handler):
    """The reactor's handler; `namespace` is its state."""

    namespace: Namespace
    keys: Mapping[str, str]
    host: str
    port: int
    on_ready: Callable[[], None]
    clock: Callable[[], float] = time.time
    _acceptor: Acceptor | None = None
    _container: Container | None = None
    _receivers: dict[Link, _Receiver] = field(default_factory=dict)
    _waiting: dict[Link, _Waiting] = field(default_factory=dict)
    _requests: dict[Link, _Request] = field(default_factory=dict)
    _reply_links: dict[tuple[Session, str], Link] = field(default_factory=dict)
    _grants: dict[Connection, list[str]] = field(default_factory=dict)
    _connections: set[Connection] = field(default_factory=set)

    def __post_init__(self) -> None:
        super().__init__()

    # ------------------------------------------------------------------ lifecycle
    def on_reactor_init(self, event: Event) -> None:
        self._container = event.container
        self._acceptor = event.container.listen(f"{self.host}:{self.port}")
        event.container.schedule(TICK_S, self)
        self.on_ready()

    def on_timer_task(self, event: Event) -> None:
        now = self.clock()
        self.namespace.tick(now)
        self._serve_waiting(now)
        self._dispatch_all()
        event.container.schedule(TICK_S, self)

    def on_shutdown(self, event: Event) -> None:
        """The ApplicationEvent `LocalServiceBus.stop()` injects."""
        if self._acceptor is not None:
            self._acceptor.close()
        for connection in list(self._connections):
            connection.close()
        if self._container is not None:
            self._container.stop()

    def on_connection_remote_open(self, event: Event) -> None:
        connection = _required(event.connection)
        self._connections.add(connection)
        if connection.state & Connection.LOCAL_UNINIT:
            connection.open()

    def on_session_remote_open(self, event: Event) -> None:
        session = _required(event.session)
        if session.state & Session.LOCAL_UNINIT:
            session.open()

    def on_session_remote_close(self, event: Event) -> None:
        _required(event.session).close()

    def on_connection_remote_close(self, event: Event) -> None:
        _required(event.connection).close()

    def on_transport_closed(self, event: Event) -> None:
        connection = event.connection
        if connection is None:
            return
        for link in [link for link in self._all_links() if link.connection == connection]:
            self._forget(link)
        self._grants.pop(connection, None)
        self._connections.discard(connection)

    def on_link_remote_close(self, event: Event) -> None:
        link = _required(event.link)
        self._forget(link)
        link.close()

    # ------------------------------------------------------------------ attach
    def on_link_remote_open(self, event: Event) -> None:
        link = _required(event.link)
        if not link.state & Link.LOCAL_UNINIT:
            return
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        if link.is_sender:
            self._attach_receiver(link)
        else:
            self._attach_sender(link)

    def _attach_sender(self, link: Link) -> None:
        """The client sends on `link`: to `$cbs`, a `$management` node, or a queue or topic."""
        address = str(link.remote_target.address or "")
        link.target.address = address
        _echo(link.remote_source, link.source)
        path = wire.entity_path(address)
        if path == CBS:
            self._requests[link] = _Request("cbs", path)
        elif path.lower().endswith(MANAGEMENT_SUFFIX):
            self._requests[link] = _Request("management", path[: -len(MANAGEMENT_SUFFIX)])
        else:
            try:
                entity = self.namespace.entity(path)
            except EntityNotFoundError as error:
                self._refuse(link, NOT_FOUND, str(error))
                return
            if not self._authorized(link.connection, path):
                self._refuse(link, UNAUTHORIZED, f"Unauthorized access to '{path}'.")
                return
            link.max_message_size = entity.spec.max_message_size_bytes
            self._requests[link] = _Request("entity", path)
        link.open()
        link.flow(INCOMING_CREDIT)

    def _attach_receiver(self, link: Link) -> None:
        """The client receives on `link`: CBS / management replies, or messages from a store."""
        address = str(link.remote_source.address or "")
        link.source.address = address
        _echo(link.remote_target, link.target)
        path = wire.entity_path(address)
        if path == CBS or path.lower().endswith(MANAGEMENT_SUFFIX):
            self._reply_links[(link.session, path.lower())] = link
            link.open()
            return
        try:
            store = self.namespace.store(path)
        except EntityNotFoundError as error:
            self._refuse(link, NOT_FOUND, str(error))
            return
        if not self._authorized(link.connection, path):
            self._refuse(link, UNAUTHORIZED, f"Unauthorized access to '{path}'.")
            return
        filters = _filters(link.remote_source)
        sessionful = wire.SESSION_FILTER in filters
        if sessionful != store.settings.requires_session:
            why = "requires" if store.settings.requires_session else "does not require"
            self._refuse(link, NOT_ALLOWED, f"The entity '{path}' {why} sessions.")
            return
        owner = uuid.uuid4().hex
        presettled = link.remote_snd_settle_mode == Link.SND_SETTLED
        if not sessionful:
            self._receivers[link] = _Receiver(store, owner, presettled)
            link.open()
            return
        wanted = filters[wire.SESSION_FILTER]
        now = self.clock()
        try:
            session_id = store.acquire_session(
                None if wanted is None else str(wanted), owner=owner, now=now
            )
        except SessionCannotBeLockedError as error:
            self._refuse(link, SESSION_CANNOT_BE_LOCKED, str(error))
            return
        if session_id is None:
            wait_ms = (link.remote_properties or {}).get(wire.SERVER_TIMEOUT)
            wait_s = DEFAULT_SESSION_WAIT_S if wait_ms is None else int(wait_ms) / 1000
            self._waiting[link] = _Waiting(store, owner, deadline=now + wait_s)
            return
        self._open_session_link(link, store, owner, session_id, presettled)

    def _open_session_link(
        self, link: Link, store: MessageStore, owner: str, session_id: str, presettled: bool
    ) -> None:
        link.source.filter.put_dict({wire.SESSION_FILTER: session_id})
        locked_until = store.session_locks[session_id].locked_until
        link.properties = {wire.SESSION_LOCKED_UNTIL: wire.dotnet_ticks(locked_until)}
        self._receivers[link] = _Receiver(store, owner, presettled, session_id)
        link.open()

    def _serve_waiting(self, now: float) -> None:
        for link, waiting in list(self._waiting.items()):
            session_id = waiting.store.acquire_session(None, owner=waiting.owner, now=now)
            if session_id is not None:
                del self._waiting[link]
                presettled = link.remote_snd_settle_mode == Link.SND_SETTLED
                self._open_session_link(link, waiting.store, waiting.owner, session_id, presettled)
            elif waiting.deadline <= now:
                del self._waiting[link]
                self._refuse(link, TIMEOUT, "No session was available before the timeout.")

    def _refuse(self, link: Link, condition: str, description: str) -> None:
        """Answer an attach with a null terminus and detach at once, as Service Bus does."""
        if link.is_sender:
            link.source.type = Terminus.UNSPECIFIED
        else:
            link.target.type = Terminus.UNSPECIFIED
        link.open()
        link.condition = Condition(condition, description)
        link.close()

    def _authorized(self, connection: Connection, path: str) -> bool:
        wanted = path.lower()
        return any(
            wanted == granted or not granted or wanted.startswith(granted + "/")
            for granted in self._grants.get(connection, [])
        )

    def _forget(self, link: Link) -> None:
        receiver = self._receivers.pop(link, None)
        if receiver is not None and receiver.session_id is not None:
            # a session's messages and lock go with its receiver; a plain receiver's locks stay
            # until they expire, since the SDK may still settle them on the management link
            receiver.store.drop_locks(receiver.owner)
        self._waiting.pop(link, None)
        self._requests.pop(link, None)
        for key, reply in list(self._reply_links.items()):
            if reply == link:
                del self._reply_links[key]

    def _all_links(self) -> list[Link]:
        return [*self._receivers, *self._waiting, *self._requests, *self._reply_links.values()]

    # ------------------------------------------------------------------ delivering
    def on_link_flow(self, event: Event) -> None:
        self._dispatch(_required(event.link))

    def _dispatch_all(self) -> None:
        for link in list(self._receivers):
            self._dispatch(link)

    def _dispatch(self, link: Link) -> None:
        receiver = self._receivers.get(link)
        if receiver is None:
            return
        now = self.clock()
        while link.credit > 0:
            message = receiver.store.next_available(now, session_id=receiver.session_id)
            if message is None:
                break
            if receiver.presettled:
                tag = uuid.uuid4().bytes_le
                payload = wire.delivered(message, locked_until=None)
                receiver.store.remove(message)
            else:
                token = receiver.store.lock(message, owner=receiver.owner, now=now)
                tag = token.bytes_le
                payload = wire.delivered(message, locked_until=message.locked_until)
            delivery = link.delivery(tag)  # type: ignore[arg-type]  # proton takes bytes too
            link.send(payload)
            link.advance()
            if receiver.presettled:
                delivery.settle()
            else:
                receiver.tokens[delivery] = token
        link.drained()  # gives back what is left when the client asked to drain; else a no-op

    # ------------------------------------------------------------------ deliveries
    def on_delivery(self, event: Event) -> None:
        link = _required(event.link)
        delivery = _required(event.delivery)
        if link.is_sender:
            self._settled_by_client(link, delivery)
        elif delivery.readable and not delivery.partial:
            raw = bytes(link.recv(delivery.pending))
            link.advance()
            self._received(link, delivery, raw)
            if link.credit < INCOMING_CREDIT // 2:
                link.flow(INCOMING_CREDIT - link.credit)
        self._dispatch_all()

    def _settled_by_client(self, link: Link, delivery: Delivery) -> None:
        receiver = self._receivers.get(link)
        state = delivery.remote_state
        if receiver is None or not state or delivery.settled:
            # proton's `settled` is the peer's settlement; settling here frees the delivery
            if delivery.settled:
                delivery.settle()
            return
        remote: Disposition = delivery.remote
        reason = description = None
        if state == Delivery.ACCEPTED:
            outcome = Outcome.COMPLETE
        elif state == Delivery.RELEASED:
            outcome = Outcome.RELEASE
        elif state == Delivery.MODIFIED:
            outcome = Outcome.DEFER if remote.undeliverable else Outcome.ABANDON
            delivery.local.failed = remote.failed
            delivery.local.undeliverable = remote.undeliverable
        elif state == Delivery.REJECTED:
            outcome = Outcome.DEAD_LETTER
            info = remote.condition.info if remote.condition else None
            info = info if isinstance(info, dict) else {}
            reason = text(info.get("DeadLetterReason"))
            description = text(info.get("DeadLetterErrorDescription"))
        else:
            return  # `received` is not a terminal outcome
        token = receiver.tokens.pop(delivery, None)
        try:
            receiver.store.settle(
                token or uuid.UUID(int=0),  # no lock has the nil token: answered as lock lost
                outcome,
                now=self.clock(),
                reason=reason,
                description=description,
            )
        except LockLostError as error:
            delivery.local.condition = Condition(LOCK_LOST, str(error), {symbol("reason"): "lock"})
            state = Delivery.REJECTED
        delivery.update(state)
        delivery.settle()

    def _received(self, link: Link, delivery: Delivery, raw: bytes) -> None:
        request = self._requests.get(link)
        if request is None:
            delivery.update(Delivery.REJECTED)
        elif request.kind == "entity":
            self._accept_send(request.path, delivery, raw)
        else:
            message = wire.decode(raw)
            if request.kind == "cbs":
                reply = self._put_token(link.connection, message)
            else:
                reply = management(self.namespace, request.path, message, self.clock())
            self._reply(link, message, reply, camel=request.kind == "management")
            delivery.update(Delivery.ACCEPTED)
        delivery.settle()

    def _accept_send(self, path: str, delivery: Delivery, raw: bytes) -> None:
        entity = self.namespace.entity(path)
        if len(raw) > entity.spec.max_message_size_bytes:
            delivery.local.condition = Condition(
                MESSAGE_SIZE_EXCEEDED,
                f"The message of {len(raw)} bytes exceeds the limit of "
                f"{entity.spec.max_message_size_bytes} bytes of '{path}'.",
                # the SDK's send waits forever on a rejection whose error has no info
                {symbol("limit"): entity.spec.max_message_size_bytes},
            )
            delivery.update(Delivery.REJECTED)
            return
        now = self.clock()
        for payload in wire.split_batch(raw) or [raw]:
            entity.accept(payload, wire.envelope_of(wire.decode(payload)), now)
        delivery.update(Delivery.ACCEPTED)

    def _reply(self, link: Link, request: Message, reply: MgmtReply, *, camel: bool) -> None:
        session_key = (link.session, self._requests[link].path.lower())
        address = CBS if session_key[1] == CBS else session_key[1] + MANAGEMENT_SUFFIX
        reply_link = self._reply_links.get((link.session, address.lower()))
        if reply_link is None:
            _log.warning("no reply link for %s on this session; the reply is dropped", address)
            return
        code, text = (
            ("statusCode", "statusDescription") if camel else ("status-code", "status-description")
        )
        properties: dict[str, Any] = {code: reply.status, text: reply.description}
        if reply.condition is not None:
            properties["errorCondition"] = symbol(reply.condition)
        answer = Message(
            body=reply.body,
            correlation_id=request.id,
            properties=properties,
            address=request.reply_to,
        )
        reply_link.send(answer)

    # ------------------------------------------------------------------ CBS
    def _put_token(self, connection: Connection, message: Message) -> MgmtReply:
        properties = wire.application_properties(message)
        audience, kind = str(properties.get("name", "")), str(properties.get("type", ""))
        if properties.get("operation") != "put-token":
            return MgmtReply(400, description="Only put-token is supported on $cbs.")
        # the SDK labels a SAS token "jwt" as often as "servicebus.windows.net:sastoken"
        if kind not in {"jwt", "servicebus.windows.net:sastoken"}:
            return MgmtReply(401, description=f"Token type {kind!r} is not accepted here.")
        refused = wire.check_sas_token(
            str(message.body), audience=audience, keys=self.keys, now=self.clock()
        )
        if refused is not None:
            return MgmtReply(401, description=f"InvalidSignature: {refused}.")
        self._grants.setdefault(connection, []).append(wire.entity_path(audience).lower())
        return MgmtReply(202, description="Accepted")


def _required(value: _T | None) -> _T:
    """An event's endpoint that proton types as optional but always sets for that event."""
    if value is None:
        msg = "proton sent an event without the endpoint it concerns"
        raise RuntimeError(msg)
    return value


def _echo(remote: Terminus, local: Terminus) -> None:
    if remote.address is not None:
        local.address = remote.address


def _filters(source: Terminus) -> dict[Any, Any]:
    data: Data = source.filter
    data.rewind()
    if data.next() != Data.MAP:
        return {}
    return dict(data.get_dict())
