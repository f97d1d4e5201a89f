"""State messages on Service Bus, and a follower's snapshot assembly (pure; issue 20).

docs/bus.md says why the watcher is the source of snapshots on Service Bus. This module is the
wire format and the follower's state machine, without any I/O, so that both are tested alone:

- `state_message` / `tombstone_message`: one object's change, for every reader of its kind;
- `snapshot_messages`: a kind's values between a begin and an end marker, for one reader (or,
  from a starting watcher, for every reader);
- `decode`: a received message back into a `StateMessage`, ValueError when it is not one (the
  follower dead-letters it);
- `Assembly`: what a follower makes of the messages of its session, in order: nothing until a
  snapshot addressed to it begins, the snapshot at its end marker, then each change.

Every message's session id is its kind, so each subscription's one session delivers in the order
the watcher sent. Changes sent while a snapshot is being sent are applied to the snapshot being
assembled: they are newer than what the snapshot held when the watcher read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import orjson

from kairyu_contracts.objectstate import JSON, KINDS, Kind, ObjectKey
from kairyu_core.bus._statestream import Change, Snapshot
from kairyu_core.bus.servicebus_topology import EVERY_READER, TO_PROPERTY

KIND_PROPERTY = "kairyu-kind"
NAMESPACE_PROPERTY = "kairyu-namespace"
NAME_PROPERTY = "kairyu-name"
DELETED_PROPERTY = "kairyu-deleted"
DIGEST_PROPERTY = "kairyu-digest"
WAKE_PROPERTY = "kairyu-wake"
SNAPSHOT_PROPERTY = "kairyu-snapshot"
"""`begin` or `end` on a marker; absent on a value."""
SNAPSHOT_ID_PROPERTY = "kairyu-snapshot-id"

Marker = Literal["begin", "end"]
_MARKERS: tuple[Marker, ...] = ("begin", "end")


@dataclass(frozen=True)
class OutMessage:
    """A message to send to a kind's topic, as the Service Bus SDK's message takes it."""

    body: bytes
    properties: dict[str, str]
    message_id: str
    session_id: str
    subject: str


@dataclass(frozen=True)
class StateMessage:
    """A received state message: a value, a tombstone (value None), or a snapshot marker."""

    kind: Kind
    to: str
    key: ObjectKey | None = None
    value: JSON | None = None
    digest: str | None = None
    wake: str | None = None
    marker: Marker | None = None
    snapshot_id: str | None = None


def _object_properties(key: ObjectKey, to: str) -> dict[str, str]:
    return {
        TO_PROPERTY: to,
        KIND_PROPERTY: key.kind,
        NAMESPACE_PROPERTY: key.namespace,
        NAME_PROPERTY: key.name,
    }


def state_message(
    key: ObjectKey,
    value: JSON,
    *,
    digest: str,
    wake: str | None,
    to: str = EVERY_READER,
    message_id: str | None = None,
) -> OutMessage:
    """An object's new value, for every reader of its kind unless `to` says otherwise.

    Its id is the object's uid and resourceVersion (as on NATS), so a retried send is stored
    once while a later version with an earlier content is stored again.
    """
    meta = value.get("metadata") or {}
    properties = _object_properties(key, to) | {DIGEST_PROPERTY: digest}
    if wake is not None:
        properties[WAKE_PROPERTY] = wake
    return OutMessage(
        body=orjson.dumps(value),
        properties=properties,
        message_id=message_id or f"{meta.get('uid')}/{meta.get('resourceVersion')}",
        session_id=key.kind,
        subject="state",
    )


def tombstone_message(key: ObjectKey, *, uid: str | None) -> OutMessage:
    """The object was deleted."""
    return OutMessage(
        body=b"",
        properties=_object_properties(key, EVERY_READER) | {DELETED_PROPERTY: "true"},
        message_id=f"{uid or key.path}/deleted",
        session_id=key.kind,
        subject="deleted",
    )


def snapshot_messages(
    kind: Kind,
    values: dict[ObjectKey, tuple[JSON, str, str | None]],
    *,
    to: str,
    snapshot_id: str,
) -> list[OutMessage]:
    """`values` (key → value, digest, wake) of `kind` between markers, addressed to `to`.

    The values' ids carry the snapshot's id: the topic's duplicate detection would otherwise
    drop a value already sent as a change within its window, and the snapshot would miss it.
    """

    def marker(which: Marker) -> OutMessage:
        return OutMessage(
            body=b"",
            properties={
                TO_PROPERTY: to,
                KIND_PROPERTY: kind,
                SNAPSHOT_PROPERTY: which,
                SNAPSHOT_ID_PROPERTY: snapshot_id,
            },
            message_id=f"{snapshot_id}/{which}",
            session_id=kind,
            subject=f"snapshot-{which}",
        )

    messages = [marker("begin")]
    for key, (value, digest, wake) in values.items():
        if key.kind != kind:
            raise ValueError(f"{key.kind} {key.path} in a snapshot of {kind}")
        meta = value.get("metadata") or {}
        message_id = f"{snapshot_id}/{meta.get('uid')}/{meta.get('resourceVersion')}"
        messages.append(
            state_message(key, value, digest=digest, wake=wake, to=to, message_id=message_id)
        )
    messages.append(marker("end"))
    return messages


def decode(body: bytes, properties: dict[str, str]) -> StateMessage:
    """A received message as a `StateMessage`; ValueError names what is wrong with it."""
    kind = properties.get(KIND_PROPERTY)
    if kind not in KINDS:
        raise ValueError(f"no known {KIND_PROPERTY}: {kind!r}")
    to = properties.get(TO_PROPERTY)
    if not to:
        raise ValueError(f"no {TO_PROPERTY}")
    marker = properties.get(SNAPSHOT_PROPERTY)
    if marker is not None:
        if marker not in _MARKERS:
            raise ValueError(f"unknown snapshot marker {marker!r}")
        snapshot_id = properties.get(SNAPSHOT_ID_PROPERTY)
        if not snapshot_id:
            raise ValueError("a snapshot marker without its id")
        return StateMessage(kind=kind, to=to, marker=marker, snapshot_id=snapshot_id)
    namespace, name = properties.get(NAMESPACE_PROPERTY), properties.get(NAME_PROPERTY)
    if namespace is None or not name:
        raise ValueError("a state without its object's namespace and name")
    key = ObjectKey(kind, namespace, name)
    if properties.get(DELETED_PROPERTY) == "true":
        return StateMessage(kind=kind, to=to, key=key)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the state of {key} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"the state of {key} is not an object")  # noqa: TRY004 - malformed data
    return StateMessage(
        kind=kind,
        to=to,
        key=key,
        value=value,
        digest=properties.get(DIGEST_PROPERTY),
        wake=properties.get(WAKE_PROPERTY),
    )


@dataclass
class Assembly:
    """A follower's reading of one kind's session: waiting, collecting a snapshot, following.

    `reader` is the follower's identity. Until a snapshot addressed to it (or to every reader)
    begins, changes are a backlog from before it asked and are dropped: the snapshot will hold
    what they said. While collecting, every value and tombstone updates the snapshot. At the
    end marker the snapshot is returned; after it each change is. A new snapshot may begin at
    any time (a restarted watcher sends one to all): it is collected the same way and replaces
    the view at its end.
    """

    kind: Kind
    reader: str
    collecting: str | None = None
    """The id of the snapshot being collected, if one is."""
    synced: bool = False
    """Whether a snapshot was returned; changes count only after one."""
    _values: dict[ObjectKey, JSON] = field(default_factory=dict)
    _digests: dict[ObjectKey, str] = field(default_factory=dict)
    _wakes: dict[ObjectKey, str] = field(default_factory=dict)

    def restart(self) -> None:
        """The session was lost: drop everything until a new snapshot begins."""
        self.collecting = None
        self.synced = False
        self._clear()

    def _clear(self) -> None:
        self._values, self._digests, self._wakes = {}, {}, {}

    def feed(self, message: StateMessage) -> Snapshot | Change | None:
        """What `message` gives the view, if anything; ValueError for another kind's message."""
        if message.kind != self.kind:
            raise ValueError(f"a {message.kind} message in the {self.kind} session")
        if message.to not in (EVERY_READER, self.reader):
            return None  # another reader's snapshot (the subscription's rules let none through)
        if message.marker == "begin":
            self.collecting = message.snapshot_id
            self._clear()
            return None
        if message.marker == "end":
            if message.snapshot_id != self.collecting:
                return None  # the end of a snapshot whose beginning was not read
            self.collecting = None
            self.synced = True
            return Snapshot(self.kind, self._values, self._digests, self._wakes)
        if message.key is None:  # pragma: no cover - decode gives values a key
            raise ValueError("a state without its object")
        if self.collecting is not None:
            self._collect(message)
            return None
        if not self.synced:
            return None  # a backlog from before the snapshot asked for
        return Change(message.key, message.value, message.digest, message.wake)

    def _collect(self, message: StateMessage) -> None:
        key = message.key
        assert key is not None  # noqa: S101 - checked by feed
        self._digests.pop(key, None)
        self._wakes.pop(key, None)
        if message.value is None:
            self._values.pop(key, None)
            return
        self._values[key] = message.value
        if message.digest:
            self._digests[key] = message.digest
        if message.wake:
            self._wakes[key] = message.wake
