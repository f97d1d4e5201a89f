"""Declarations of the stream and of each service's durable consumer, created idempotently."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kairyu_core.events import Event, Subjects

DEFAULT_STREAM = "KAIRYU"


@dataclass(frozen=True)
class StreamSpec:
    """The one JetStream stream holding kairyu's events and their dead letters."""

    name: str = DEFAULT_STREAM
    subjects: Subjects = field(default_factory=Subjects)
    max_age_s: float = 7 * 24 * 3600
    """How long events are kept (s). A week outlasts any rollout and any outage worth replaying."""
    duplicate_window_s: float = 120.0
    """Window (s) in which a repeated Nats-Msg-Id is dropped; covers a publisher's retries."""


@dataclass(frozen=True)
class ConsumerSpec:
    """A service's durable pull consumer; the replicas of the service share it."""

    durable: str
    filter_subjects: tuple[str, ...]
    ack_wait_s: float = 30.0
    """Time (s) before an unacknowledged message is redelivered; kept alive by in-progress acks."""
    max_deliver: int = 10
    """Deliveries before a failing message is dead-lettered instead of retried."""
    max_ack_pending: int = 256
    """Messages in flight across all replicas, bounding memory and concurrent work."""

    @classmethod
    def of_events(
        cls, durable: str, events: Iterable[type[Event]], subjects: Subjects
    ) -> ConsumerSpec:
        """The consumer of a service that handles exactly these event types."""
        return cls(durable=durable, filter_subjects=tuple(subjects.of_event(e) for e in events))
