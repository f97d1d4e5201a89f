"""kairyu's event bus on NATS JetStream; the only package that imports nats.

Publish events with `Bus.publish`; consume them with a `Consumer`, whose handler signals the end
of each message by returning or by raising `TemporaryError` / `PermanentError` (see `errors`).
"""

from kairyu_core.bus._connection import Bus, Published
from kairyu_core.bus._consuming import Consumer, Delivery, Handler, backoff
from kairyu_core.bus._redacting import redact
from kairyu_core.bus._statestream import Change, Snapshot
from kairyu_core.bus.errors import BusError, PermanentError, TemporaryError
from kairyu_core.bus.topology import (
    CONSUMED_BY,
    DEFAULT_STREAM,
    FOLLOWS,
    ConsumerSpec,
    StreamSpec,
)

__all__ = [
    "CONSUMED_BY",
    "DEFAULT_STREAM",
    "FOLLOWS",
    "Bus",
    "BusError",
    "Change",
    "Consumer",
    "ConsumerSpec",
    "Delivery",
    "Handler",
    "PermanentError",
    "Published",
    "Snapshot",
    "StreamSpec",
    "TemporaryError",
    "backoff",
    "redact",
]
