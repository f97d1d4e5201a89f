"""The local Service Bus endpoint's `$management` operations: renew, settle, schedule, peek.

The SDK reaches these over a request/response link pair on `<entity>/$management`: an
application property `operation` names one, the body is an AMQP map, and the reply carries
`statusCode` / `statusDescription` (camelCase, unlike `$cbs`). Split from the broker so that each
operation is a plain function of the namespace, the entity path, the request and the time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proton import Array, Data, Message

from kairyu_localenv import servicebus_wire as wire
from kairyu_localenv.servicebus_entities import (
    EntityNotFoundError,
    LockLostError,
    Namespace,
    Outcome,
    SessionLockLostError,
)

NOT_FOUND = "amqp:not-found"
LOCK_LOST = "com.microsoft:message-lock-lost"
SESSION_LOCK_LOST = "com.microsoft:session-lock-lost"

_SETTLEMENTS = {
    "completed": Outcome.COMPLETE,
    "abandoned": Outcome.ABANDON,
    "defered": Outcome.DEFER,  # sic: the service's own spelling
    "suspended": Outcome.DEAD_LETTER,
}
_DEFERRED_STATE = 1  # x-opt-message-state: 0 active, 1 deferred, 2 scheduled


@dataclass
class MgmtReply:
    """A reply to a `$cbs` or `$management` request."""

    status: int
    body: Any = None
    description: str = ""
    condition: str | None = None


def elements(value: Any) -> list[Any]:
    """An AMQP array's or a list's items."""
    return list(value.elements) if isinstance(value, Array) else list(value)


def text(value: object) -> str | None:
    return None if value is None else str(value)


def management(namespace: Namespace, path: str, message: Message, now: float) -> MgmtReply:
    """The reply to one `$management` request on `path` at time `now`."""
    operation = str(wire.application_properties(message).get("operation", ""))
    body: dict[str, Any] = message.body if isinstance(message.body, dict) else {}
    handler = _MANAGEMENT.get(operation.removeprefix("com.microsoft:"))
    if handler is None:
        return MgmtReply(501, description=f"The operation {operation!r} is not supported.")
    try:
        return handler(namespace, path, body, now)
    except EntityNotFoundError as error:
        return MgmtReply(404, description=str(error), condition=NOT_FOUND)
    except LockLostError as error:
        return MgmtReply(410, description=str(error), condition=LOCK_LOST)
    except SessionLockLostError as error:
        return MgmtReply(410, description=str(error), condition=SESSION_LOCK_LOST)


def _renew_lock(namespace: Namespace, path: str, body: dict[str, Any], now: float) -> MgmtReply:
    store = namespace.store(path)
    expirations = [
        wire.amqp_timestamp(store.renew(token, now)) for token in elements(body["lock-tokens"])
    ]
    return MgmtReply(200, {"expirations": expirations})


def _update_disposition(
    namespace: Namespace, path: str, body: dict[str, Any], now: float
) -> MgmtReply:
    store = namespace.store(path)
    outcome = _SETTLEMENTS[str(body["disposition-status"])]
    for token in elements(body["lock-tokens"]):
        store.settle(
            token,
            outcome,
            now=now,
            reason=text(body.get("deadletter-reason")),
            description=text(body.get("deadletter-description")),
        )
    return MgmtReply(200, {})


def _schedule(namespace: Namespace, path: str, body: dict[str, Any], now: float) -> MgmtReply:
    entity = namespace.entity(path)
    numbers = []
    for item in body.get("messages", []):
        payload = bytes(item["message"])
        number = entity.accept(payload, wire.envelope_of(wire.decode(payload)), now)
        if number is not None:
            numbers.append(number)
    return MgmtReply(200, {"sequence-numbers": Array(None, Data.LONG, *numbers)})


def _cancel(namespace: Namespace, path: str, body: dict[str, Any], now: float) -> MgmtReply:
    namespace.entity(path).cancel(int(n) for n in elements(body["sequence-numbers"]))
    return MgmtReply(200, {})


def _peek(namespace: Namespace, path: str, body: dict[str, Any], now: float) -> MgmtReply:
    store = namespace.store(path)
    found = store.peek(int(body.get("from-sequence-number", 0)), int(body["message-count"]))
    session_id = body.get("session-id")
    if session_id is not None:
        found = [m for m in found if m.envelope.session_id == session_id]
    if not found:
        return MgmtReply(204, description="No messages")
    messages = [
        {
            "message": wire.delivered(
                m, locked_until=None, state=_DEFERRED_STATE if m.deferred else None
            )
        }
        for m in found
    ]
    return MgmtReply(200, {"messages": messages})


def _receive_deferred(
    namespace: Namespace, path: str, body: dict[str, Any], now: float
) -> MgmtReply:
    store = namespace.store(path)
    found = store.deferred(int(n) for n in elements(body["sequence-numbers"]))
    messages = []
    for message in found:
        token = store.lock(message, owner="management", now=now)
        payload = wire.delivered(message, locked_until=message.locked_until, state=_DEFERRED_STATE)
        messages.append({"lock-token": token, "message": payload})
    return MgmtReply(200, {"messages": messages})


def _get_session_state(
    namespace: Namespace, path: str, body: dict[str, Any], now: float
) -> MgmtReply:
    store = namespace.store(path)
    return MgmtReply(200, {"session-state": store.session_states.get(str(body["session-id"]))})


def _set_session_state(
    namespace: Namespace, path: str, body: dict[str, Any], now: float
) -> MgmtReply:
    store, session_id = namespace.store(path), str(body["session-id"])
    state = body.get("session-state")
    if state is None:
        store.session_states.pop(session_id, None)
    else:
        store.session_states[session_id] = bytes(state)
    return MgmtReply(200, {})


def _renew_session_lock(
    namespace: Namespace, path: str, body: dict[str, Any], now: float
) -> MgmtReply:
    store = namespace.store(path)
    until = store.renew_session(str(body["session-id"]), now)
    return MgmtReply(200, {"expiration": wire.amqp_timestamp(until)})


_MANAGEMENT: dict[str, Callable[[Namespace, str, dict[str, Any], float], MgmtReply]] = {
    "renew-lock": _renew_lock,
    "update-disposition": _update_disposition,
    "schedule-message": _schedule,
    "cancel-scheduled-message": _cancel,
    "peek-message": _peek,
    "receive-by-sequence-number": _receive_deferred,
    "get-session-state": _get_session_state,
    "set-session-state": _set_session_state,
    "renew-session-lock": _renew_session_lock,
}
