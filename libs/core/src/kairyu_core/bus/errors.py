"""What a handler raises to say how its message should end (the bus acts on it, handlers never ack).

| handler outcome        | JetStream action                                              |
|------------------------|---------------------------------------------------------------|
| returns                | ack                                                           |
| TemporaryError(delay)  | nak(delay, growing to 60 s while it lasts); never given up    |
| PermanentError         | copy to the dead-letter subject, then term                    |
| any other Exception    | nak with exponential backoff; dead-letter after max_deliver   |
| cancelled              | nothing: JetStream redelivers after ack_wait                  |
"""

from __future__ import annotations


class BusError(Exception):
    """The bus could not do what was asked (connect, set up a stream, publish)."""


class TemporaryError(Exception):
    """A failure that may pass (a conflict, a dependency not ready): retry after `delay` seconds."""

    def __init__(self, message: str, *, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(Exception):
    """A failure retries cannot fix (bad data, unknown preset): the message is dead-lettered.

    `reason` is a CamelCase word for machines (it becomes a header and a condition reason).
    """

    def __init__(self, message: str, *, reason: str = "PermanentError") -> None:
        super().__init__(message)
        self.reason = reason
