"""The local Service Bus namespace's state, with no I/O: what the AMQP endpoint reads and changes.

`servicebus_endpoint` speaks the wire protocol; this module decides what a queue, a topic and its
subscriptions hold and what each operation does to them, the way Service Bus does: per-entity
sequence numbers, peek-lock with lock tokens and lock expiry, abandon / defer / dead-letter, a
dead-letter sub-queue per queue and subscription, the max delivery count, sessions (one receiver
holds a session at a time, with its own state), correlation-filter rules on subscriptions,
duplicate detection on message ids, scheduled messages and time-to-live. Every operation takes the
current time (`now`, seconds since the epoch) so it can be tested without a clock.

A message is kept as the encoded bare message the sender sent (`payload`) plus the few fields the
broker routes by (`Envelope`); the endpoint adds the broker's annotations when it delivers one.
"""

from __future__ import annotations

import base64
import enum
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

DEAD_LETTER_SUFFIX = "/$deadletterqueue"
SUBSCRIPTIONS = "/subscriptions/"
MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
TTL_EXPIRED = "TTLExpiredException"


class EntityNotFoundError(LookupError):
    """No queue, topic or subscription by that name (Service Bus: amqp:not-found)."""


class LockLostError(Exception):
    """The lock token is unknown or its lock expired (com.microsoft:message-lock-lost)."""


class SessionCannotBeLockedError(Exception):
    """Another receiver holds the session (com.microsoft:session-cannot-be-locked)."""


class SessionLockLostError(Exception):
    """The session's lock expired or is held by someone else (com.microsoft:session-lock-lost)."""


class Outcome(enum.Enum):
    """What a receiver does with a locked message."""

    COMPLETE = "complete"
    ABANDON = "abandon"
    DEFER = "defer"
    DEAD_LETTER = "dead-letter"
    RELEASE = "release"
    """Handed back unprocessed (a prefetched message the client did not want): not counted."""


@dataclass(frozen=True)
class Envelope:
    """The fields of a message the broker routes, filters and de-duplicates by."""

    message_id: str | None = None
    correlation_id: str | None = None
    subject: str | None = None
    to: str | None = None
    reply_to: str | None = None
    content_type: str | None = None
    session_id: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    """The application properties."""
    ttl_s: float | None = None
    """The message's own time-to-live; None means the entity's default."""
    scheduled_at: float | None = None
    """When a scheduled message becomes visible (x-opt-scheduled-enqueue-time)."""


@dataclass(frozen=True)
class CorrelationFilter:
    """Service Bus's correlation filter: every field that is set must equal the message's."""

    correlation_id: str | None = None
    subject: str | None = None
    message_id: str | None = None
    to: str | None = None
    reply_to: str | None = None
    content_type: str | None = None
    session_id: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, envelope: Envelope) -> bool:
        pairs = (
            (self.correlation_id, envelope.correlation_id),
            (self.subject, envelope.subject),
            (self.message_id, envelope.message_id),
            (self.to, envelope.to),
            (self.reply_to, envelope.reply_to),
            (self.content_type, envelope.content_type),
            (self.session_id, envelope.session_id),
        )
        if any(wanted is not None and wanted != actual for wanted, actual in pairs):
            return False
        return all(
            name in envelope.properties and envelope.properties[name] == value
            for name, value in self.properties.items()
        )


@dataclass(frozen=True)
class QueueSettings:
    """The knobs of a queue or a subscription, with Service Bus's defaults."""

    lock_duration_s: float = 60.0
    max_delivery_count: int = 10
    default_ttl_s: float | None = None
    """None: messages never expire (Service Bus's default is TimeSpan.MaxValue)."""
    requires_session: bool = False
    dead_letter_on_expiry: bool = False


@dataclass(frozen=True)
class SubscriptionSpec:
    name: str
    settings: QueueSettings = QueueSettings()
    rules: tuple[CorrelationFilter, ...] = ()
    """ORed; no rules means Service Bus's default rule, which takes every message."""


@dataclass(frozen=True)
class EntitySpec:
    """A queue (`subscriptions` empty, `topic` False) or a topic."""

    name: str
    topic: bool = False
    settings: QueueSettings = QueueSettings()
    """A queue's settings; a topic's subscriptions have their own."""
    subscriptions: tuple[SubscriptionSpec, ...] = ()
    duplicate_detection_window_s: float | None = None
    """None: duplicate detection is off (as by default in Service Bus)."""
    max_message_size_bytes: int = 256 * 1024  # the Standard tier's limit


@dataclass
class StoredMessage:
    sequence_number: int
    payload: bytes
    """The encoded bare message as the sender sent it."""
    envelope: Envelope
    enqueued_at: float
    expires_at: float | None = None
    delivery_count: int = 0
    """Failed deliveries so far (abandoned or lock expired); what AMQP's header carries."""
    deferred: bool = False
    lock_token: uuid.UUID | None = None
    locked_until: float = 0.0
    lock_owner: str | None = None
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None
    dead_letter_source: str | None = None


@dataclass
class SessionLock:
    owner: str
    locked_until: float


class MessageStore:
    """A queue, a subscription, or the dead-letter sub-queue of either."""

    def __init__(self, path: str, settings: QueueSettings, *, dead_letter: bool = False) -> None:
        self.path = path
        self.settings = settings
        self.messages: dict[int, StoredMessage] = {}
        self._by_token: dict[uuid.UUID, int] = {}
        self.session_locks: dict[str, SessionLock] = {}
        self.session_states: dict[str, bytes] = {}
        self.dead_letters: MessageStore | None = (
            None
            if dead_letter
            else MessageStore(
                path + "/$DeadLetterQueue",
                # the sub-queue is never session-bound, and nothing leaves it on its own
                replace(settings, requires_session=False, default_ttl_s=None),
                dead_letter=True,
            )
        )

    # ------------------------------------------------------------------ receiving
    def enqueue(self, message: StoredMessage) -> None:
        self.messages[message.sequence_number] = message

    def next_available(self, now: float, *, session_id: str | None = None) -> StoredMessage | None:
        """The oldest message a receiver (of `session_id`, if given) may take now."""
        for message in self.messages.values():
            if message.deferred or (message.lock_token is not None):
                continue
            if message.expires_at is not None and message.expires_at <= now:
                continue
            if session_id is not None and message.envelope.session_id != session_id:
                continue
            return message
        return None

    def lock(self, message: StoredMessage, *, owner: str, now: float) -> uuid.UUID:
        token = uuid.uuid4()
        message.lock_token = token
        message.locked_until = now + self.settings.lock_duration_s
        message.lock_owner = owner
        self._by_token[token] = message.sequence_number
        return token

    def remove(self, message: StoredMessage) -> None:
        """Take a message away (receive-and-delete)."""
        self._unlock(message)
        self.messages.pop(message.sequence_number, None)

    def locked(self, token: uuid.UUID, now: float) -> StoredMessage:
        sequence_number = self._by_token.get(token)
        message = None if sequence_number is None else self.messages.get(sequence_number)
        if message is None or message.lock_token != token or message.locked_until <= now:
            raise LockLostError(f"the lock {token} on {self.path} is lost or was never held")
        return message

    def settle(
        self,
        token: uuid.UUID,
        outcome: Outcome,
        *,
        now: float,
        reason: str | None = None,
        description: str | None = None,
    ) -> None:
        message = self.locked(token, now)
        self._unlock(message)
        match outcome:
            case Outcome.COMPLETE:
                self.messages.pop(message.sequence_number)
            case Outcome.RELEASE:
                pass
            case Outcome.ABANDON:
                self._count_failed_delivery(message)
            case Outcome.DEFER:
                message.deferred = True
            case Outcome.DEAD_LETTER:
                self.dead_letter(message, reason=reason, description=description)

    def settle_deferred(
        self,
        sequence_number: int,
        outcome: Outcome,
        *,
        reason: str | None = None,
        description: str | None = None,
    ) -> None:
        """Settle a deferred message taken by sequence number (its lock is the mgmt link's)."""
        message = self.messages[sequence_number]
        self._unlock(message)
        if outcome is Outcome.COMPLETE:
            self.messages.pop(sequence_number)
        elif outcome is Outcome.DEAD_LETTER:
            self.dead_letter(message, reason=reason, description=description)

    def renew(self, token: uuid.UUID, now: float) -> float:
        message = self.locked(token, now)
        message.locked_until = now + self.settings.lock_duration_s
        return message.locked_until

    def dead_letter(
        self, message: StoredMessage, *, reason: str | None, description: str | None
    ) -> None:
        self.messages.pop(message.sequence_number, None)
        self._unlock(message)
        if self.dead_letters is None:  # dead-lettering from the dead-letter queue drops it
            return
        message.deferred = False
        message.dead_letter_reason = reason
        message.dead_letter_description = description
        message.expires_at = None
        self.dead_letters.enqueue(message)

    def expire(self, now: float) -> None:
        """Apply the clock: lost locks, lost session locks, messages past their time-to-live."""
        for session_id, session in list(self.session_locks.items()):
            if session.locked_until <= now:
                self.release_session(session_id, session.owner)
        for message in list(self.messages.values()):
            if message.lock_token is not None and message.locked_until <= now:
                self._unlock(message)
                self._count_failed_delivery(message)
            elif (
                message.lock_token is None
                and message.expires_at is not None
                and message.expires_at <= now
            ):
                if self.settings.dead_letter_on_expiry:
                    self.dead_letter(message, reason=TTL_EXPIRED, description=None)
                else:
                    self.messages.pop(message.sequence_number)

    def drop_locks(self, owner: str) -> None:
        """The receiver `owner` went away: what it held (a session's messages) is free again."""
        for message in list(self.messages.values()):
            if message.lock_owner == owner:
                self._unlock(message)
                self._count_failed_delivery(message)
        for session_id, session in list(self.session_locks.items()):
            if session.owner == owner:
                del self.session_locks[session_id]

    # ------------------------------------------------------------------ browsing
    def peek(self, from_sequence_number: int, count: int) -> list[StoredMessage]:
        found = sorted(
            (m for m in self.messages.values() if m.sequence_number >= from_sequence_number),
            key=lambda m: m.sequence_number,
        )
        return found[:count]

    def deferred(self, sequence_numbers: Iterable[int]) -> list[StoredMessage]:
        found = []
        for number in sequence_numbers:
            message = self.messages.get(number)
            if message is None or not message.deferred:
                raise LockLostError(f"no deferred message {number} on {self.path}")
            found.append(message)
        return found

    # ------------------------------------------------------------------ sessions
    def acquire_session(self, session_id: str | None, *, owner: str, now: float) -> str | None:
        """Lock `session_id`, or the session of the oldest message no one holds when None.

        Returns the session locked, or None when `session_id` is None and no session is free.
        """
        if session_id is None:
            for message in self.messages.values():
                candidate = message.envelope.session_id
                if (
                    candidate is not None
                    and candidate not in self.session_locks
                    and self.next_available(now, session_id=candidate) is not None
                ):
                    session_id = candidate
                    break
            else:
                return None
        held = self.session_locks.get(session_id)
        if held is not None and held.owner != owner and held.locked_until > now:
            raise SessionCannotBeLockedError(
                f"the session {session_id!r} of {self.path} is locked by another receiver"
            )
        self.session_locks[session_id] = SessionLock(owner, now + self.settings.lock_duration_s)
        return session_id

    def session_lock(self, session_id: str, now: float) -> SessionLock:
        held = self.session_locks.get(session_id)
        if held is None or held.locked_until <= now:
            raise SessionLockLostError(f"the lock on session {session_id!r} is lost")
        return held

    def renew_session(self, session_id: str, now: float) -> float:
        held = self.session_lock(session_id, now)
        held.locked_until = now + self.settings.lock_duration_s
        return held.locked_until

    def release_session(self, session_id: str, owner: str) -> None:
        held = self.session_locks.get(session_id)
        if held is not None and held.owner == owner:
            del self.session_locks[session_id]
            for message in list(self.messages.values()):
                if message.lock_owner == owner and message.envelope.session_id == session_id:
                    self._unlock(message)
                    self._count_failed_delivery(message)

    # ------------------------------------------------------------------ helpers
    def _unlock(self, message: StoredMessage) -> None:
        if message.lock_token is not None:
            self._by_token.pop(message.lock_token, None)
        message.lock_token = None
        message.locked_until = 0.0
        message.lock_owner = None

    def _count_failed_delivery(self, message: StoredMessage) -> None:
        message.delivery_count += 1
        if (
            self.dead_letters is not None  # the dead-letter sub-queue keeps what it holds
            and message.delivery_count >= self.settings.max_delivery_count
        ):
            self.dead_letter(
                message,
                reason=MAX_DELIVERY_COUNT_EXCEEDED,
                description=(
                    f"Message could not be consumed after {self.settings.max_delivery_count} "
                    "delivery attempts."
                ),
            )


class Entity:
    """A queue or a topic: where senders send, with its sequence numbers and scheduled messages."""

    def __init__(self, spec: EntitySpec) -> None:
        self.spec = spec
        self.next_sequence_number = 1
        self.scheduled: dict[int, StoredMessage] = {}
        self.seen_message_ids: dict[str, float] = {}
        self.queue = None if spec.topic else MessageStore(spec.name, spec.settings)
        self.subscriptions = {
            sub.name.lower(): MessageStore(f"{spec.name}/Subscriptions/{sub.name}", sub.settings)
            for sub in spec.subscriptions
        }
        self._rules = {sub.name.lower(): sub.rules for sub in spec.subscriptions}

    def stores(self) -> list[MessageStore]:
        live = [self.queue] if self.queue is not None else list(self.subscriptions.values())
        return live + [store.dead_letters for store in live if store.dead_letters is not None]

    def accept(self, payload: bytes, envelope: Envelope, now: float) -> int | None:
        """Take a sent message; return its sequence number, or None for a dropped duplicate."""
        window = self.spec.duplicate_detection_window_s
        if window is not None and envelope.message_id is not None:
            seen = self.seen_message_ids.get(envelope.message_id)
            if seen is not None and seen > now - window:
                return None
            self.seen_message_ids[envelope.message_id] = now
        number = self.next_sequence_number
        self.next_sequence_number += 1
        message = StoredMessage(number, payload, envelope, enqueued_at=now)
        if envelope.scheduled_at is not None and envelope.scheduled_at > now:
            self.scheduled[number] = message
        else:
            self._deliver(message, now)
        return number

    def cancel(self, sequence_numbers: Iterable[int]) -> None:
        for number in sequence_numbers:
            self.scheduled.pop(number, None)

    def release_due(self, now: float) -> None:
        for number, message in sorted(self.scheduled.items()):
            scheduled_at = message.envelope.scheduled_at
            if scheduled_at is None or scheduled_at <= now:
                del self.scheduled[number]
                message.enqueued_at = now
                self._deliver(message, now)

    def _deliver(self, message: StoredMessage, now: float) -> None:
        if self.queue is not None:
            self.queue.enqueue(_stamped(message, self.queue.settings, now))
            return
        for name, store in self.subscriptions.items():
            rules = self._rules[name]
            if not rules or any(rule.matches(message.envelope) for rule in rules):
                store.enqueue(_stamped(replace(message), store.settings, now))


def _stamped(message: StoredMessage, settings: QueueSettings, now: float) -> StoredMessage:
    ttl = message.envelope.ttl_s
    if ttl is None:
        ttl = settings.default_ttl_s
    elif settings.default_ttl_s is not None:
        ttl = min(ttl, settings.default_ttl_s)  # an entity's default caps a message's own
    message.expires_at = None if ttl is None else now + ttl
    return message


class Namespace:
    """Every entity of the local namespace, looked up case-insensitively as Service Bus does."""

    def __init__(self, specs: Iterable[EntitySpec]) -> None:
        self.entities = {spec.name.lower(): Entity(spec) for spec in specs}

    def entity(self, name: str) -> Entity:
        entity = self.entities.get(name.strip("/").lower())
        if entity is None:
            raise EntityNotFoundError(f"The messaging entity '{name}' could not be found.")
        return entity

    def store(self, path: str) -> MessageStore:
        """The store at a receiver's path: `q` or `t/Subscriptions/s`, + `/$DeadLetterQueue`."""
        lowered = path.strip("/").lower()
        dead_letter = lowered.endswith(DEAD_LETTER_SUFFIX)
        if dead_letter:
            lowered = lowered.removesuffix(DEAD_LETTER_SUFFIX)
        entity_name, _, subscription = lowered.partition(SUBSCRIPTIONS)
        entity = self.entities.get(entity_name)
        store = None
        if entity is not None:
            store = entity.subscriptions.get(subscription) if subscription else entity.queue
        if store is None:
            raise EntityNotFoundError(f"The messaging entity '{path}' could not be found.")
        if dead_letter:
            assert store.dead_letters is not None  # noqa: S101 - live stores always have one
            return store.dead_letters
        return store

    def tick(self, now: float) -> None:
        for entity in self.entities.values():
            entity.release_due(now)
            for store in entity.stores():
                store.expire(now)

    # ------------------------------------------------------------------ persistence
    def snapshot(self) -> dict[str, Any]:
        """Everything but locks, as JSON-able data (a restarted broker has lost every lock)."""
        return {
            name: {
                "next_sequence_number": entity.next_sequence_number,
                "seen_message_ids": entity.seen_message_ids,
                "scheduled": [_dump(m) for m in entity.scheduled.values()],
                "stores": {
                    store.path: {
                        "messages": [_dump(m) for m in store.messages.values()],
                        "session_states": {
                            sid: base64.b64encode(state).decode()
                            for sid, state in store.session_states.items()
                        },
                    }
                    for store in entity.stores()
                },
            }
            for name, entity in self.entities.items()
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Load a `snapshot()`; entities no longer configured are ignored."""
        for name, saved in snapshot.items():
            entity = self.entities.get(name)
            if entity is None:
                continue
            entity.next_sequence_number = int(saved["next_sequence_number"])
            entity.seen_message_ids = dict(saved["seen_message_ids"])
            entity.scheduled = {m.sequence_number: m for m in map(_load, saved["scheduled"])}
            stores = {store.path: store for store in entity.stores()}
            for path, content in saved["stores"].items():
                store = stores.get(path)
                if store is None:
                    continue
                store.messages = {m.sequence_number: m for m in map(_load, content["messages"])}
                store.session_states = {
                    sid: base64.b64decode(state) for sid, state in content["session_states"].items()
                }


def _dump(message: StoredMessage) -> dict[str, Any]:
    envelope = message.envelope
    return {
        "sequence_number": message.sequence_number,
        "payload": base64.b64encode(message.payload).decode(),
        "envelope": {
            "message_id": envelope.message_id,
            "correlation_id": envelope.correlation_id,
            "subject": envelope.subject,
            "to": envelope.to,
            "reply_to": envelope.reply_to,
            "content_type": envelope.content_type,
            "session_id": envelope.session_id,
            "properties": _json_safe(envelope.properties),
            "ttl_s": envelope.ttl_s,
            "scheduled_at": envelope.scheduled_at,
        },
        "enqueued_at": message.enqueued_at,
        "expires_at": message.expires_at,
        "delivery_count": message.delivery_count,
        "deferred": message.deferred,
        "dead_letter_reason": message.dead_letter_reason,
        "dead_letter_description": message.dead_letter_description,
    }


def _json_safe(properties: Mapping[str, Any]) -> dict[str, Any]:
    # only what a correlation filter can compare survives a snapshot; the payload keeps the rest
    return {
        key: value
        for key, value in properties.items()
        if isinstance(value, str | int | float | bool) or value is None
    }


def _load(data: Mapping[str, Any]) -> StoredMessage:
    return StoredMessage(
        sequence_number=int(data["sequence_number"]),
        payload=base64.b64decode(data["payload"]),
        envelope=Envelope(**data["envelope"]),
        enqueued_at=float(data["enqueued_at"]),
        expires_at=data["expires_at"],
        delivery_count=int(data["delivery_count"]),
        deferred=bool(data["deferred"]),
        dead_letter_reason=data["dead_letter_reason"],
        dead_letter_description=data["dead_letter_description"],
    )


def specs_from_json(data: Mapping[str, Any]) -> list[EntitySpec]:
    """Entity specs from the `--entities` file's JSON.

    ``{"queues": [{"name": "q", "lock_duration_s": 2, ...}], "topics": [{"name": "t",
    "duplicate_detection_window_s": 60, "subscriptions": [{"name": "s", "rules": [{"subject":
    "x", "properties": {"k": "v"}}], ...}]}]}``; a queue's or subscription's other keys are the
    fields of `QueueSettings`.
    """

    def settings(raw: Mapping[str, Any]) -> QueueSettings:
        known = QueueSettings.__dataclass_fields__
        return QueueSettings(**{key: value for key, value in raw.items() if key in known})

    specs = [
        EntitySpec(
            name=raw["name"],
            settings=settings(raw),
            duplicate_detection_window_s=raw.get("duplicate_detection_window_s"),
            max_message_size_bytes=int(raw.get("max_message_size_bytes", 256 * 1024)),
        )
        for raw in data.get("queues", [])
    ]
    specs += [
        EntitySpec(
            name=raw["name"],
            topic=True,
            duplicate_detection_window_s=raw.get("duplicate_detection_window_s"),
            max_message_size_bytes=int(raw.get("max_message_size_bytes", 256 * 1024)),
            subscriptions=tuple(
                SubscriptionSpec(
                    name=sub["name"],
                    settings=settings(sub),
                    rules=tuple(CorrelationFilter(**rule) for rule in sub.get("rules", [])),
                )
                for sub in raw.get("subscriptions", [])
            ),
        )
        for raw in data.get("topics", [])
    ]
    return specs
