"""The state stream: the latest trimmed value of every watched object, one subject per object.

`<prefix>.v1.state.<kind>.<namespace>.<name>` in the stream `<stream>_STATE`, which keeps one
message per subject (a key-value store in JetStream's terms; it is one because its limits say
so). The watcher writes a value when an object changes in something a service reads, and a
tombstone when it is deleted; tombstones carry a TTL (`Nats-TTL`), so the stream holds the live
objects and the recently deleted ones, and no more, however many Workspaces come and go.

`follow(kind)` is an informer over NATS: it first yields a `Snapshot` of every current value of
the kind (an ordered consumer delivering the last message per subject), then each `Change` as it
is stored. After a NATS reconnect, or when the ordered consumer breaks, it subscribes again and
yields a fresh snapshot; the view replaces its copy with it (`View.replace`), so changes and
deletions missed during the outage are not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import nats.errors
import orjson
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from kairyu_contracts.objectstate import CLUSTER_SCOPED, JSON, Kind, ObjectKey, kind_of
from kairyu_contracts.subjects import Subjects, token
from kairyu_core.bus.outcomes import BusError

if TYPE_CHECKING:
    from kairyu_core.bus._connection import Bus

log = logging.getLogger(__name__)

DELETED_HEADER = "Kairyu-Deleted"
DIGEST_HEADER = "Kairyu-Digest"
WAKE_HEADER = "Kairyu-Wake"
"""The digest of what services decide on (kairyu_core.informing.wake_digest), computed once by
the watcher so that each service compares two strings instead of hashing every change again."""
_IDLE_HEARTBEAT_S = 5.0
_POLL_S = 1.0
_MAX_BACKOFF_S = 30.0
_SUBJECT_TOKENS = 6  # <prefix>.v1.state.<kind>.<namespace>.<name>


@dataclass(frozen=True)
class Snapshot:
    """Every current value of one kind, as found when (re)subscribing."""

    kind: Kind
    values: dict[ObjectKey, JSON]
    digests: dict[ObjectKey, str]
    wakes: dict[ObjectKey, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One object's new value (None: deleted) after the snapshot."""

    key: ObjectKey
    value: JSON | None
    digest: str | None
    wake: str | None = None


def state_subject(prefix: str, key: ObjectKey) -> str:
    kind = Subjects(prefix).states_of(key.kind).removesuffix(">")
    return f"{kind}{token(key.namespace)}.{token(key.name)}"


def key_of_subject(subject: str) -> ObjectKey:
    """The object a state subject names; ValueError for anything else."""
    tokens = subject.split(".")
    if len(tokens) != _SUBJECT_TOKENS or tokens[1:3] != ["v1", "state"]:
        raise ValueError(f"not a state subject: {subject!r}")
    namespace = tokens[4] if tokens[4] == CLUSTER_SCOPED else tokens[4].replace("_", ".")
    return ObjectKey(kind_of(tokens[3]), namespace, tokens[5].replace("_", "."))


def decode(msg: Msg) -> Change:
    """The state message as a Change (value None: a tombstone); ValueError if malformed."""
    key = key_of_subject(msg.subject)
    headers = msg.headers or {}
    if headers.get(DELETED_HEADER) or headers.get("Nats-Marker-Reason"):
        return Change(key, None, None)
    value = orjson.loads(msg.data)
    if not isinstance(value, dict):
        raise ValueError(f"state of {key} is not an object")  # noqa: TRY004 - malformed data
    return Change(key, value, headers.get(DIGEST_HEADER), headers.get(WAKE_HEADER))


async def follow(bus: Bus, kind: Kind) -> AsyncGenerator[Snapshot | Change, None]:
    """Yield a snapshot of `kind`, then its changes; resubscribe (new snapshot) after outages."""
    failures = 0
    while True:
        seen = bus.reconnects

        def outdated(seen: int = seen) -> bool:
            return bus.reconnects != seen

        try:
            async for item in _follow_once(bus, kind, outdated):
                failures = 0
                yield item
        except (nats.errors.Error, BusError, TimeoutError, NotFoundError) as exc:
            failures += 1
            delay = min(_MAX_BACKOFF_S, 0.25 * 2**failures)
            log.warning("following %s states failed (%r); again in %.1fs", kind, exc, delay)
            await asyncio.sleep(delay)


async def _follow_once(
    bus: Bus, kind: Kind, outdated: Callable[[], bool]
) -> AsyncIterator[Snapshot | Change]:
    subject = bus.stream.subjects.states_of(kind)
    # A consumer name of its own makes nats-py ask for it on the extended subject
    # $JS.API.CONSUMER.CREATE.<stream>.<name>.<filter> rather than on the bare
    # $JS.API.CONSUMER.CREATE.<stream>, so that NATS authorization can allow each service the
    # kinds it follows and no other (the server checks the filter against the subject).
    config = ConsumerConfig(name=f"{kind.lower()}-{uuid.uuid4().hex}")
    sub = await bus.js.subscribe(
        subject,
        stream=bus.stream.state_stream,
        config=config,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        idle_heartbeat=_IDLE_HEARTBEAT_S,
        inactive_threshold=300.0,
    )
    deliver = config.deliver_subject

    def reset() -> bool:
        # nats-py resets a broken ordered consumer (a gap, missed heartbeats) by giving this
        # config a new deliver subject and creating it again under the same name, which the
        # server refuses while the old consumer lives; so a reset ends this subscription and
        # `follow` starts afresh, with a new name and a new snapshot.
        return config.deliver_subject != deliver

    try:
        values: dict[ObjectKey, JSON] = {}
        digests: dict[ObjectKey, str] = {}
        wakes: dict[ObjectKey, str] = {}
        while True:  # the snapshot: until the consumer says nothing more is pending
            try:
                msg = await sub.next_msg(timeout=_POLL_S)
            except nats.errors.TimeoutError:
                raise_if_cancelled()
                if reset():
                    raise BusError(f"the ordered consumer of {kind} states was reset") from None
                info = await sub.consumer_info()
                if not info.num_pending and sub.pending_msgs == 0:
                    break
                continue
            raise_if_cancelled()
            pending = _apply(msg, values, digests, wakes)
            if pending == 0:
                break
        yield Snapshot(kind, values, digests, wakes)
        while not outdated():
            try:
                msg = await sub.next_msg(timeout=_POLL_S)
            except nats.errors.TimeoutError:
                raise_if_cancelled()
                if reset():
                    raise BusError(f"the ordered consumer of {kind} states was reset") from None
                continue
            raise_if_cancelled()
            try:
                change = decode(msg)
            except ValueError:
                log.warning("skipping a malformed state message on %s", msg.subject)
                continue
            yield change
        log.info("NATS reconnected: following %s states from a fresh snapshot", kind)
    finally:
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await sub.unsubscribe()


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that a nats-py call swallowed.

    nats-py waits for a message or a reply with `asyncio.wait_for`, which on Python 3.11 returns
    the result instead of raising when the cancellation and the result arrive together; a loop
    would then go on for ever and a service's shutdown would hang. The task still counts the
    request.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _apply(
    msg: Msg,
    values: dict[ObjectKey, JSON],
    digests: dict[ObjectKey, str],
    wakes: dict[ObjectKey, str],
) -> int:
    """Put one snapshot message into `values`; the messages still pending after it."""
    try:
        change = decode(msg)
    except ValueError:
        log.warning("skipping a malformed state message on %s", msg.subject)
    else:
        key = change.key
        digests.pop(key, None)
        wakes.pop(key, None)
        if change.value is None:
            values.pop(key, None)
        else:
            values[key] = change.value
            if change.digest:
                digests[key] = change.digest
            if change.wake:
                wakes[key] = change.wake
    return int(msg.metadata.num_pending)
