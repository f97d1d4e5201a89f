"""What a reconcile raises to say how it ended (`kairyu_core.reconciling` acts on it).

| reconcile outcome      | action                                                            |
|------------------------|-------------------------------------------------------------------|
| returns                | done (or looked at again after its `requeue_after`)               |
| TemporaryError(delay)  | retried after `delay`, growing while it lasts; never given up     |
| PermanentError(reason) | given up: logged and recorded as a dead letter, until the next change |
| any other Exception    | retried with backoff; given up like a PermanentError if it repeats |
"""

from __future__ import annotations


class BusError(Exception):
    """The bus could not do what was asked (connect, set up a stream, publish)."""


class BusSettingsError(Exception):
    """The bus's settings cannot work (a malformed connection string, an unknown service).

    Not a BusError, which a service waits out: trying again cannot fix a setting, so the
    service says what is wrong and stops (`kairyu_core.service.main`).
    """


class TemporaryError(Exception):
    """A failure that may pass (a conflict, a dependency not ready): retry after `delay` seconds."""

    def __init__(self, message: str, *, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(Exception):
    """A failure retries cannot fix (bad data, unknown preset): the reconcile is dead-lettered.

    `reason` is a CamelCase word for machines (it becomes a header and a condition reason).
    """

    def __init__(self, message: str, *, reason: str = "PermanentError") -> None:
        super().__init__(message)
        self.reason = reason
