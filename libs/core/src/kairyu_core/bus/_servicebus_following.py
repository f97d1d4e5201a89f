"""Following a kind on Service Bus: the session receiver around `servicebus_states.Assembly`.

The NATS follower (`_statestream.follow`) reads the state stream's last value per subject; here
nothing keeps states, so the follower opens its subscription's one session (the kind), asks the
watcher for a snapshot, and feeds every message in order to the `Assembly`, which says what the
view gets: the snapshot at its end marker, then each change.

What can go wrong, and what it does:
- a message that is not a state message: dead-lettered on the subscription with why, and logged;
  the follower goes on (on NATS such a message is skipped);
- no snapshot begins within `_ASK_AGAIN_S` (the watcher was away, or the request expired): ask
  again;
- the session lock is lost (a pause longer than the lock), the link or connection breaks, or
  Service Bus restarts: back off, reopen the session, start the assembly over and ask again, so
  a fresh snapshot replaces the view and no missed deletion stays in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING

from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusReceiver
from azure.servicebus.exceptions import ServiceBusError

from kairyu_contracts.objectstate import Kind
from kairyu_core.bus._statestream import Change, Snapshot
from kairyu_core.bus.outcomes import BusError
from kairyu_core.bus.servicebus_states import Assembly, decode

if TYPE_CHECKING:
    from kairyu_core.bus._servicebus import ServiceBusBus

log = logging.getLogger(__name__)

_POLL_S = 1.0  # how long one receive waits when fewer messages are there than asked for
_BATCH = 100  # messages taken at once, and held ahead (prefetch)
_ASK_AGAIN_S = 15.0  # no snapshot begun this long after asking: the request is asked again
_MAX_BACKOFF_S = 30.0
_LOCK_FRACTION = 3  # renew when a third of the session lock's remaining time has passed
_UNKNOWN_LOCK_S = 10.0  # if the SDK does not say until when the lock holds, renew this often
_MIN_RENEW_S = 0.2
_REASON_MAX = 256  # a dead-letter reason is a short text; the description says the rest


async def follow(bus: ServiceBusBus, kind: Kind) -> AsyncGenerator[Snapshot | Change, None]:
    """Yield a snapshot of `kind`, then its changes; a fresh snapshot after each failure."""
    try:
        subscription = bus.topology.subscription(bus.service, kind)
    except KeyError as exc:
        raise BusError(f"{bus.identity} has no subscription to {kind} states") from exc
    assembly = Assembly(kind, reader=bus.identity)
    failures = 0
    while True:
        assembly.restart()
        try:
            async with bus.client.get_subscription_receiver(
                subscription.topic,
                subscription.name,
                session_id=kind,
                # With no prefetch the SDK releases what arrives between two receives, and a
                # released message came back only after the lock duration (the local endpoint):
                # seconds of delay. In a session the session's lock covers what is held ahead.
                prefetch_count=_BATCH,
            ) as receiver:
                async for item in _follow_session(bus, receiver, assembly):
                    failures = 0
                    yield item
        except (ServiceBusError, BusError) as exc:
            bus.mark(healthy=False)
            failures += 1
            bus.reconnects += 1
            delay = min(_MAX_BACKOFF_S, 0.25 * 2**failures)
            log.warning(
                "following %s states failed (%r); a fresh snapshot in %.1fs", kind, exc, delay
            )
            await asyncio.sleep(delay)


async def _follow_session(
    bus: ServiceBusBus, receiver: ServiceBusReceiver, assembly: Assembly
) -> AsyncIterator[Snapshot | Change]:
    renewing = asyncio.create_task(_renew_session(receiver))
    try:
        await bus.request_snapshot(assembly.kind)
        asked = time.monotonic()
        while True:
            if renewing.done():
                renewing.result()  # raises why the lock could not be renewed
                raise BusError("the session lock renewal stopped")  # pragma: no cover
            messages = await receiver.receive_messages(
                max_message_count=_BATCH, max_wait_time=_POLL_S
            )
            bus.mark(healthy=True)
            log.debug("received %d %s state messages", len(messages), assembly.kind)
            for message in messages:
                item = await _take(receiver, message, assembly)
                if item is not None:
                    yield item
            waiting = not assembly.synced and assembly.collecting is None
            if waiting and time.monotonic() - asked > _ASK_AGAIN_S:
                log.info("no %s snapshot began yet; asking the watcher again", assembly.kind)
                await bus.request_snapshot(assembly.kind)
                asked = time.monotonic()
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError, ServiceBusError):
            await renewing


async def _take(
    receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage, assembly: Assembly
) -> Snapshot | Change | None:
    """What `message` gives the view; it is settled before that is returned."""
    try:
        item = assembly.feed(decode(body_of(message), properties_of(message)))
    except ValueError as exc:
        why = str(exc)
        log.warning(
            "dead-lettering an unreadable %s state message %s: %s",
            assembly.kind,
            message.message_id,
            why,
        )
        await receiver.dead_letter_message(
            message,
            reason=why[:_REASON_MAX],
            error_description=f"{assembly.reader} cannot read this {assembly.kind} state: {why}",
        )
        return None
    await receiver.complete_message(message)
    return item


async def _renew_session(receiver: ServiceBusReceiver) -> None:
    """Renew the session's lock well before it runs out, until cancelled (or it fails)."""
    session = receiver.session
    while True:
        until = session.locked_until_utc
        if until is None:
            wait = _UNKNOWN_LOCK_S
        else:
            left = (until - datetime.datetime.now(datetime.UTC)).total_seconds()
            wait = max(_MIN_RENEW_S, left / _LOCK_FRACTION)
        await asyncio.sleep(wait)
        renewed = await session.renew_lock()
        log.debug("renewed the %s session's lock until %s", session.session_id, renewed)


def body_of(message: ServiceBusReceivedMessage) -> bytes:
    """A received message's body as bytes (the SDK yields a data body in sections)."""
    body = message.body
    if isinstance(body, bytes):
        return body
    return b"".join(body)


def properties_of(message: ServiceBusReceivedMessage) -> dict[str, str]:
    """A received message's application properties, decoded (the SDK gives bytes keys)."""

    def text(item: object) -> str:
        return item.decode() if isinstance(item, bytes) else str(item)

    return {text(k): text(v) for k, v in (message.application_properties or {}).items()}
