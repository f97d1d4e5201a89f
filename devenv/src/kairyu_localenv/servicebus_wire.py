"""Service Bus's conventions on top of AMQP 1.0, between proton's messages and the local broker.

The Service Bus SDK expects more of a message than AMQP says: the broker's annotations
(`x-opt-sequence-number`, `x-opt-enqueued-time`, `x-opt-locked-until`), the delivery count in the
header, dead-letter reason and description as application properties, times as .NET ticks, SAS
tokens in a CBS put-token, and batches sent as one transfer whose data sections are whole encoded
messages. This module holds those conversions so the broker module only moves messages around.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote_plus

from proton import Data, Message, symbol, timestamp

from kairyu_localenv.servicebus_entities import Envelope, StoredMessage

SEQUENCE_NUMBER = symbol("x-opt-sequence-number")
ENQUEUED_TIME = symbol("x-opt-enqueued-time")
LOCKED_UNTIL = symbol("x-opt-locked-until")
SCHEDULED_ENQUEUE_TIME = symbol("x-opt-scheduled-enqueue-time")
DEAD_LETTER_SOURCE = symbol("x-opt-deadletter-source")
MESSAGE_STATE = symbol("x-opt-message-state")
SESSION_FILTER = symbol("com.microsoft:session-filter")
SESSION_LOCKED_UNTIL = symbol("com.microsoft:locked-until-utc")
SERVER_TIMEOUT = symbol("com.microsoft:timeout")

# .NET's DateTime ticks (100 ns) at the Unix epoch, as `com.microsoft:locked-until-utc` counts
_TICKS_AT_UNIX_EPOCH = 621_355_968_000_000_000
_TICKS_PER_SECOND = 10_000_000
_HEADER_SECTION = 0x70
_DATA_SECTION = 0x75
# described-type constructor (0x00), small-ulong descriptor (0x53), then one of AMQP's message
# section codes 0x70 (header) .. 0x78 (footer): how every encoded message section starts
_SECTION_PREFIX = b"\x00\x53"
_SECTION_CODES = range(0x70, 0x79)


def dotnet_ticks(unix_seconds: float) -> int:
    return _TICKS_AT_UNIX_EPOCH + int(unix_seconds * _TICKS_PER_SECOND)


def amqp_timestamp(unix_seconds: float) -> timestamp:
    return timestamp(int(unix_seconds * 1000))


def split_batch(raw: bytes) -> list[bytes] | None:
    """The encoded messages of a batch transfer, or None when `raw` is one plain message.

    The SDK marks a batch with message-format 0x80013700, which proton does not expose, so a
    transfer counts as a batch when every one of its data sections is itself an encoded message.
    A plain message whose binary body happens to be an encoded AMQP message would be taken for a
    batch; the SDK never sends one.
    """
    offset, inner = 0, []
    while offset < len(raw):
        data = Data()
        offset += data.decode(raw[offset:])
        data.rewind()
        if data.next() != Data.DESCRIBED:
            return None
        data.enter()
        data.next()
        descriptor = data.get_object()
        data.next()
        if descriptor == _DATA_SECTION:
            inner.append(bytes(data.get_binary()))
        data.exit()
    if inner and all(_is_encoded_message(section) for section in inner):
        return inner
    return None


def _is_encoded_message(section: bytes) -> bool:
    code = section[len(_SECTION_PREFIX) : len(_SECTION_PREFIX) + 1]
    return section.startswith(_SECTION_PREFIX) and bool(code) and code[0] in _SECTION_CODES


def decode(raw: bytes) -> Message:
    message = Message()
    message.decode(raw)
    return message


def application_properties(message: Message) -> dict[str, Any]:
    # proton types the property map loosely; on a received message it is a plain dict or None
    properties: Any = message.properties
    return dict(properties) if properties else {}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def envelope_of(message: Message) -> Envelope:
    """What the broker routes a sent message by."""
    annotations: Any = message.annotations or {}
    scheduled = annotations.get(SCHEDULED_ENQUEUE_TIME)
    return Envelope(
        message_id=_text(message.id),
        correlation_id=_text(message.correlation_id),
        subject=message.subject,
        to=message.address,
        reply_to=message.reply_to,
        content_type=_text(message.content_type),
        session_id=message.group_id,
        properties=application_properties(message),
        ttl_s=message.ttl or None,
        scheduled_at=None if scheduled is None else _seconds(scheduled),
    )


def _seconds(value: Any) -> float:
    # a timestamp annotation arrives as milliseconds; the SDK also may send a datetime
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return int(value) / 1000


def delivered(
    stored: StoredMessage, *, locked_until: float | None, state: int | None = None
) -> bytes:
    """The message as a receiver gets it: the sent message plus the broker's annotations."""
    message = decode(stored.payload)
    received: Any = message.annotations
    annotations: dict[Any, Any] = dict(received) if received else {}
    annotations[SEQUENCE_NUMBER] = stored.sequence_number
    annotations[ENQUEUED_TIME] = amqp_timestamp(stored.enqueued_at)
    if locked_until is not None:
        annotations[LOCKED_UNTIL] = amqp_timestamp(locked_until)
    if state is not None:
        annotations[MESSAGE_STATE] = state
    message.annotations = annotations
    if stored.dead_letter_reason is not None or stored.dead_letter_description is not None:
        properties = application_properties(message)
        if stored.dead_letter_reason is not None:
            properties["DeadLetterReason"] = stored.dead_letter_reason
        if stored.dead_letter_description is not None:
            properties["DeadLetterErrorDescription"] = stored.dead_letter_description
        message.properties = properties  # type: ignore[assignment]  # proton's hint is too narrow
    return _header(message, stored.delivery_count) + _without_header(bytes(message.encode()))


def _header(message: Message, delivery_count: int) -> bytes:
    """The header section with every field written out.

    proton leaves out a header whose fields are all defaults, and the SDK reads a missing
    delivery-count as None where Service Bus always sends a number.
    """
    data = Data()
    data.put_described()
    data.enter()
    data.put_ulong(_HEADER_SECTION)
    data.put_list()
    data.enter()
    data.put_bool(bool(message.durable))
    data.put_ubyte(int(message.priority))
    if message.ttl:
        data.put_uint(int(message.ttl * 1000))
    else:
        data.put_null()
    data.put_bool(bool(message.first_acquirer))
    data.put_uint(delivery_count)
    data.exit()
    data.exit()
    return bytes(data.encode())


def _without_header(encoded: bytes) -> bytes:
    data = Data()
    consumed = data.decode(encoded)
    data.rewind()
    data.next()
    data.enter()
    data.next()
    return encoded[consumed:] if data.get_object() == _HEADER_SECTION else encoded


def check_sas_token(
    token: str, *, audience: str, keys: Mapping[str, str], now: float
) -> str | None:
    """Why `token` does not grant `audience` (None when it does), as Service Bus checks it.

    A SAS token is ``SharedAccessSignature sr=<resource>&sig=<b64 HMAC-SHA256>&se=<expiry>&skn=
    <key name>``, the HMAC keyed with the key's text over the url-encoded resource, a newline and
    the expiry; it grants every entity under the resource.
    """
    scheme = "SharedAccessSignature "
    if not token.startswith(scheme):
        return "the token is not a shared access signature"
    fields = dict(parse_qsl(token.removeprefix(scheme), keep_blank_values=True))
    resource, signature, expiry, key_name = (fields.get(k, "") for k in ("sr", "sig", "se", "skn"))
    key = keys.get(key_name)
    if key is None:
        return f"the key name {key_name!r} is not authorized on this namespace"
    digest = hmac.new(key.encode(), f"{quote_plus(resource)}\n{expiry}".encode(), hashlib.sha256)
    if not hmac.compare_digest(base64.b64encode(digest.digest()).decode(), signature):
        return "the signature of the token does not match the key"
    if not expiry.isdigit() or int(expiry) <= now:
        return "the token has expired"
    if not _covers(resource, audience):
        return f"the token's resource {resource!r} does not cover {audience!r}"
    return None


def _covers(resource: str, audience: str) -> bool:
    def normal(uri: str) -> str:
        return uri.split("://", 1)[-1].rstrip("/").lower()

    granted, wanted = normal(resource), normal(audience)
    return wanted == granted or wanted.startswith(granted + "/")


def entity_path(address: str) -> str:
    """`amqps://host:port/a/b` or `a/b` → `a/b`: link addresses carry the namespace or not."""
    if "://" in address:
        address = address.split("://", 1)[1].partition("/")[2]
    return address.strip("/")
