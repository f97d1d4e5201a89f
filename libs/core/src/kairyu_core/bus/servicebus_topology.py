"""kairyu's topology mapped onto Azure Service Bus entities (pure; issue 20).

The NATS topology (`kairyu_core.bus.topology`) is one state stream holding the latest value per
object, a subject per object, followed per kind by each service, plus a dead-letter stream.
Service Bus has no "latest value per subject" retention, so the same families map this way:

- **one topic per state kind** (`<name>-state-<kind>`), written by the watcher alone;
- **one subscription per reader service** on each topic it follows, named by the service's bus
  identity (`kairyu-planner`), so `FOLLOWS` decides the subscriptions exactly as it decides the
  NATS consumers' filters. Every subscription requires sessions and every state message carries
  the kind as its session id: one session per subscription, delivered in the order the watcher
  sent, which is the ordered consumer's guarantee on NATS;
- **the snapshot a follower starts from is the watcher's**: a follower that starts (or lost its
  session) asks on the queue `<name>-state-requests`; the watcher, which holds every object's
  latest trimmed value, sends the kind's values into the same topic between a begin and an end
  marker addressed to that service. Each subscription's rules let through what is addressed to
  every reader (`to = "*"`: changes, and the full snapshot a starting watcher sends) or to
  itself, so a snapshot reaches the one service that asked, in order with the changes;
- **dead letters**: kairyu's give-ups go to the queue `<name>-deadletters` (what NATS keeps in
  `<name>_DEADLETTER`); a state message a follower cannot read goes to its subscription's own
  dead-letter sub-queue (Service Bus's `$DeadLetterQueue`), where `MaxDeliveryCount` also sends
  one that keeps failing.

Three parties read this declaration: the set-up step that creates the entities, the chart's
template of them for those who create them with ARM, and the local endpoint the tests run; the
docs' table is generated from it (docs/bus.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from kairyu_contracts.objectstate import KINDS, Kind
from kairyu_core.bus.topology import FOLLOWS, RECONCILERS, SERVICES, StreamSpec, identity

EVERY_READER = "*"
"""The `to` of what every reader of a topic receives: changes, and a starting watcher's snapshot."""
TO_PROPERTY = "to"
"""The application property a subscription's rules match on."""
SUBSCRIPTION_NAME_MAX = 50  # Service Bus's limit on a subscription's name
ENTITY_NAME_MAX = 260  # ... and on a topic's or queue's


@dataclass(frozen=True)
class Topic:
    """A state kind's topic: one message per change, and snapshots between markers."""

    name: str
    kind: Kind
    duplicate_window_s: int
    """Like the state stream's duplicate window: a watcher's retried send is stored once."""
    max_size_mb: int
    """The topic's size (Service Bus Standard: 1024 to 5120 MB). When full, sends are refused
    (the watcher keeps what it could not send and tries again, as with a full state stream)."""


@dataclass(frozen=True)
class Subscription:
    """One reader's subscription to a topic, with the rules that address it."""

    topic: str
    name: str
    service: str
    matches: tuple[str, ...]
    """The values of `to` this subscription takes (Service Bus ORs its rules)."""
    lock_duration_s: int
    """How long a session's lock lasts without renewal (Service Bus: at most 5 minutes)."""
    max_delivery_count: int
    """Deliveries before Service Bus moves a message to the subscription's dead-letter queue."""
    message_ttl_s: int
    """A message older than this is dropped: a follower away longer asks for a snapshot anyway,
    and an unread backlog must not fill the topic and stop every other service's changes."""
    requires_session: bool = True


@dataclass(frozen=True)
class Queue:
    """A queue: the snapshot requests, or the dead letters."""

    name: str
    carries: str
    writers: tuple[str, ...]
    readers: tuple[str, ...]
    message_ttl_s: int
    max_size_mb: int
    duplicate_window_s: int | None = None


@dataclass(frozen=True)
class ServiceBusTopology:
    """Every Service Bus entity kairyu uses for one stream spec."""

    topics: tuple[Topic, ...]
    subscriptions: tuple[Subscription, ...]
    requests: Queue
    dead_letters: Queue

    def topic_of(self, kind: Kind) -> Topic:
        for topic in self.topics:
            if topic.kind == kind:
                return topic
        raise KeyError(kind)  # pragma: no cover - every kind has a topic

    def subscription(self, service: str, kind: Kind) -> Subscription:
        """The subscription `service` reads `kind` from; KeyError if it does not follow it."""
        topic = self.topic_of(kind).name
        for subscription in self.subscriptions:
            if subscription.topic == topic and subscription.service == service:
                return subscription
        raise KeyError(f"{service} does not follow {kind}")

    def entity_names(self) -> tuple[str, ...]:
        """The topics and queues, as the set-up step checks that they exist."""
        return (
            *(t.name for t in self.topics),
            self.requests.name,
            self.dead_letters.name,
        )


def entity_name(spec: StreamSpec, *parts: str) -> str:
    """`<stream name>-<parts>` in lower case; Service Bus names are case-insensitive."""
    name = "-".join((spec.name, *parts)).lower().replace("_", "-")
    if len(name) > ENTITY_NAME_MAX:
        raise ValueError(f"Service Bus entity name too long ({len(name)}): {name}")
    return name


def servicebus_topology(
    spec: StreamSpec | None = None,
    *,
    topic_max_size_mb: int = 1024,
    lock_duration_s: int = 60,
    max_delivery_count: int = 10,
    message_ttl_s: int = 24 * 3600,
) -> ServiceBusTopology:
    """The entities that carry `spec`'s families on Service Bus."""
    spec = spec or StreamSpec()
    topics = tuple(
        Topic(
            name=entity_name(spec, "state", kind.lower()),
            kind=kind,
            duplicate_window_s=int(spec.duplicate_window_s),
            max_size_mb=topic_max_size_mb,
        )
        for kind in KINDS
    )
    subscriptions = tuple(
        Subscription(
            topic=topic.name,
            name=identity(service),
            service=service,
            matches=(EVERY_READER, identity(service)),
            lock_duration_s=lock_duration_s,
            max_delivery_count=max_delivery_count,
            message_ttl_s=message_ttl_s,
        )
        for topic in topics
        for service in SERVICES
        # The watcher reads its own states on NATS only to publish what changed while it was
        # away; on Service Bus nothing keeps them, so it sends every kind's snapshot at start.
        if service != "watcher" and topic.kind in FOLLOWS[service]
    )
    for subscription in subscriptions:
        if len(subscription.name) > SUBSCRIPTION_NAME_MAX:  # pragma: no cover - fixed names
            raise ValueError(f"subscription name too long: {subscription.name}")
    requests = Queue(
        name=entity_name(spec, "state", "requests"),
        carries="a follower's request for a kind's snapshot, answered by the watcher",
        writers=tuple(s for s in SERVICES if s != "watcher" and FOLLOWS[s]),
        readers=("watcher",),
        # A request nobody answered within minutes is asked again by its follower.
        message_ttl_s=300,
        max_size_mb=1024,
    )
    dead_letters = Queue(
        name=entity_name(spec, "deadletters"),
        carries="a Workspace key whose reconcile was given up on, the reason in its properties",
        writers=RECONCILERS,
        readers=(),
        message_ttl_s=int(spec.dead_letter_max_age_s),
        max_size_mb=1024,
        duplicate_window_s=int(spec.duplicate_window_s),
    )
    return ServiceBusTopology(topics, subscriptions, requests, dead_letters)
