"""Declarations of the stream and of each service's durable consumer, created idempotently.

They are declared here, once, because two parties need them: each service binds to its own
consumer, and under NATS authorization only the admin identity (`kairyu_core.bus.setup`, run
before a service starts) may create them. `tests/contract/test_topology.py` keeps this table and
the events each service handles in step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kairyu_core.events import (
    Event,
    NodesReady,
    ObjectChanged,
    PlanCreated,
    ReplanRequested,
    Subjects,
    WorkspaceDeleted,
    WorkspaceObserved,
)
from kairyu_core.objectstate import KINDS, Kind
from kairyu_core.settings import NatsSettings

DEFAULT_STREAM = "KAIRYU"

CONSUMED_BY: Mapping[str, tuple[type[Event], ...]] = {
    "planner": (WorkspaceObserved, ReplanRequested),
    "provisioner": (PlanCreated, WorkspaceObserved, ObjectChanged, WorkspaceDeleted),
    "deployer": (NodesReady, WorkspaceObserved, ObjectChanged),
    "tuner": (NodesReady, WorkspaceObserved, ObjectChanged),
}
"""The events each consuming service handles (the watcher consumes nothing)."""


FOLLOWS: Mapping[str, tuple[Kind, ...]] = {
    "watcher": KINDS,
    "planner": ("Workspace",),
    "provisioner": ("Workspace", "Node", "NodeClaim"),
    "deployer": ("Workspace", "Deployment", "StatefulSet", "Pod"),
    "tuner": ("Workspace", "Job", "Pod"),
}
"""The kinds whose states each service reads from the state stream into its view (the watcher
reads them all at start, to publish only what changed while it was away; it alone writes them)."""


@dataclass(frozen=True)
class StreamSpec:
    """The JetStream stream of kairyu's events, and the one beside it for their dead letters."""

    name: str = DEFAULT_STREAM
    subjects: Subjects = field(default_factory=Subjects)
    max_age_s: float = 7 * 24 * 3600
    """How long events are kept (s). A week outlasts any rollout and any outage worth replaying."""
    duplicate_window_s: float = 120.0
    """Window (s) in which a repeated Nats-Msg-Id is dropped; covers a publisher's retries."""
    max_bytes: int = 1024**3
    """Size limit (bytes; 1 GiB): the oldest messages are dropped to make room."""
    max_msgs_per_subject: int = 64
    """Messages kept per subject (one event type of one Workspace), the oldest dropped first."""
    dead_letter_max_bytes: int = 64 * 1024**2
    """Size limit of the dead-letter stream (bytes; 64 MiB); when full, new dead letters are
    refused (the message is retried later) rather than old ones dropped."""
    dead_letter_max_msgs: int = 100_000
    """Message limit of the dead-letter stream, refusing new ones like `dead_letter_max_bytes`."""

    state_max_bytes: int = 256 * 1024**2
    """Size limit of the state stream (bytes; 256 MiB): one trimmed object per subject, so this
    bounds the number of objects it can hold (about 100 000 at a few KiB each)."""
    tombstone_ttl_s: float = 3600.0
    """How long the state stream keeps a deleted object's tombstone (s). A follower that was away
    longer re-reads a fresh snapshot anyway (on reconnect), so this only has to outlast the
    delivery of the tombstone to followers that are connected."""

    @property
    def state_stream(self) -> str:
        """The stream of the objects' latest states (`<name>_STATE`), one message per subject."""
        return f"{self.name}_STATE"

    @property
    def dead_letter_stream(self) -> str:
        """The stream of the dead letters, apart from the events (`<name>_DEADLETTER`).

        Apart so that dead letters, which any service may publish on its own subjects, can never
        push unconsumed events out of the event stream: a leaked service password can fill only
        this one, whose limits refuse new messages instead of dropping old ones.
        """
        return f"{self.name}_DEADLETTER"

    def stream_of(self, subject: str) -> str:
        """The stream a subject is stored in."""
        dead_letters = self.subjects.all_dead_letters.removesuffix(">")
        if subject.startswith(dead_letters):
            return self.dead_letter_stream
        if subject.startswith(f"{self.subjects.prefix}.v1.state."):
            return self.state_stream
        return self.name

    @classmethod
    def of_settings(cls, settings: NatsSettings) -> StreamSpec:
        """The stream that the service's settings name, with their limits."""
        return cls(
            name=settings.stream,
            subjects=Subjects(prefix=settings.subject_prefix),
            max_bytes=settings.stream_max_bytes,
            max_msgs_per_subject=settings.stream_max_msgs_per_subject,
        )


@dataclass(frozen=True)
class ConsumerSpec:
    """A service's durable pull consumer; the replicas of the service share it."""

    durable: str
    filter_subjects: tuple[str, ...]
    ack_wait_s: float = 30.0
    """Time (s) before an unacknowledged message is redelivered; kept alive by in-progress acks."""
    max_deliver: int = 10
    """Deliveries after which a message whose handler keeps failing unexpectedly is dead-lettered
    (counted by the bus; a TemporaryError is retried without limit)."""
    max_ack_pending: int = 256
    """Messages in flight across all replicas, bounding memory and concurrent work."""

    @classmethod
    def of_events(
        cls, durable: str, events: Iterable[type[Event]], subjects: Subjects
    ) -> ConsumerSpec:
        """The consumer of a service that handles exactly these event types."""
        return cls(durable=durable, filter_subjects=tuple(subjects.of_event(e) for e in events))

    @classmethod
    def of_service(cls, service: str, subjects: Subjects) -> ConsumerSpec:
        """The declared consumer of a kairyu service (`planner`, …): durable `kairyu-<service>`."""
        return cls.of_events(f"kairyu-{service}", CONSUMED_BY[service], subjects)
