"""kairyu's topology on NATS, declared once: every subject, who writes it, who reads it, and why.

Three parties must agree on it and cannot import one another's code: the services (what they
write and follow), the set-up step (`kairyu_core.bus.setup`, the one component that creates the
streams) and the NATS server's authorization (the chart's template, which names each service's
subjects). So it is declared here, and tests hold the others to it: `tests/contract/
test_topology.py` checks docs/bus.md's table against `SUBJECTS`, and `tests/chart/
test_chart_render.py` the chart's per-service permissions. Azure Service Bus (issue 20) carries
the same families on its own entities, declared from this one in `servicebus_topology`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kairyu_contracts.objectstate import KINDS, Kind
from kairyu_contracts.subjects import Subjects
from kairyu_core.settings import NatsSettings

DEFAULT_STREAM = "KAIRYU"

SERVICES: tuple[str, ...] = (
    "watcher",
    "planner",
    "provisioner",
    "deployer",
    "tuner",
    "activator",
)
"""kairyu's services; each is one NATS identity, `kairyu-<service>` (`identity`)."""

FOLLOWS: Mapping[str, tuple[Kind, ...]] = {
    "watcher": KINDS,
    # Nodes only with byo (`planning.node_provisioner`): what the user's nodes offer.
    "planner": ("Workspace", "InferenceSet", "MultiRoleInference", "Node"),
    # Pods: which of an update's two nodes the serving pod is on (kairyu_provisioner.surge).
    "provisioner": ("Workspace", "Node", "NodeClaim", "Pod"),
    "deployer": ("Workspace", "Deployment", "StatefulSet", "Pod", "Occupant"),
    "tuner": ("Workspace", "Job", "Pod", "Occupant"),
    # The sets, their replicas and the replicas' pods: which sets are cold, and where to ask.
    "activator": ("Workspace", "InferenceSet", "Pod"),
}
"""The kinds whose states each service reads from the state stream into its view (the watcher
reads them all at start, to publish only what changed while it was away; it alone writes them)."""

RECONCILERS: tuple[str, ...] = ("planner", "provisioner", "deployer", "tuner", "activator")
"""The services that reconcile Workspaces from their views and dead-letter a reconcile they give
up on (`Bus.dead_letter_reconcile`); the watcher reconciles nothing."""


def identity(service: str) -> str:
    """The name a service has on the bus: its settings' `service_name` and its dead-letter token."""
    return f"kairyu-{service}"


@dataclass(frozen=True)
class SubjectFamily:
    """One family of subjects: where it lives, who writes it, who reads it, and what it carries.

    `subject` is the pattern with the default prefix, `<…>` marking the tokens that vary;
    `wildcard` is the same with NATS wildcards, as a filter or a permission names it.
    """

    subject: str
    wildcard: str
    stream: str
    producers: tuple[str, ...]
    readers: tuple[str, ...]
    carries: str


def _state_family(kind: Kind, subjects: Subjects, stream: str) -> SubjectFamily:
    readers = tuple(s for s in SERVICES if kind in FOLLOWS[s])
    namespace = "_" if kind in ("Node", "NodeClaim") else "<namespace>"
    return SubjectFamily(
        subject=f"{subjects.state_prefix}.{kind.lower()}.{namespace}.<name>",
        wildcard=subjects.states_of(kind),
        stream=stream,
        producers=("watcher",),
        readers=readers,
        carries=(
            "a name a Workspace's object would take, held by an object it does not control, "
            "or its tombstone"
            if kind == "Occupant"
            else f"the latest trimmed {kind}, or its tombstone"
        ),
    )


def _dead_letter_family(service: str, subjects: Subjects, stream: str) -> SubjectFamily:
    token = identity(service)
    return SubjectFamily(
        subject=f"{subjects.dead_letters_of(token).removesuffix('>')}"
        "workspace.reconcile.<namespace>.<name>",
        wildcard=subjects.dead_letters_of(token),
        stream=stream,
        producers=(service,),
        readers=(),
        carries="a Workspace key whose reconcile was given up on, the reason in its headers",
    )


@dataclass(frozen=True)
class StreamSpec:
    """kairyu's streams: the objects' states, and the dead letters beside them.

    `name` is the base of both names (`<name>_STATE`, `<name>_DEADLETTER`); no stream of that bare
    name is used any more (it held the events the services consumed before issue 15).
    """

    name: str = DEFAULT_STREAM
    subjects: Subjects = field(default_factory=Subjects)
    duplicate_window_s: float = 120.0
    """Window (s) in which a repeated Nats-Msg-Id is dropped; covers a publisher's retries."""
    dead_letter_max_age_s: float = 7 * 24 * 3600
    """How long dead letters are kept (s). A week outlasts any outage worth looking into."""
    dead_letter_max_bytes: int = 64 * 1024**2
    """Size limit of the dead-letter stream (bytes; 64 MiB); when full, new dead letters are
    refused (the give-up is logged all the same) rather than old ones dropped."""
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
        """The stream of the dead letters (`<name>_DEADLETTER`).

        Apart from the states so that dead letters, which any service may publish on its own
        subjects, can never push a state out: a leaked service password can fill only this one,
        whose limits refuse new messages instead of dropping old ones.
        """
        return f"{self.name}_DEADLETTER"

    @property
    def streams(self) -> tuple[str, ...]:
        """Every stream kairyu uses, created by the set-up step alone."""
        return (self.state_stream, self.dead_letter_stream)

    def stream_of(self, subject: str) -> str:
        """The stream a subject is stored in; ValueError for a subject outside the topology."""
        if subject.startswith(self.subjects.all_dead_letters.removesuffix(">")):
            return self.dead_letter_stream
        if subject.startswith(self.subjects.all_states.removesuffix(">")):
            return self.state_stream
        raise ValueError(f"no kairyu stream holds {subject!r}")

    @property
    def families(self) -> tuple[SubjectFamily, ...]:
        """Every subject family kairyu uses, states first (one per kind), then dead letters."""
        return (
            *(_state_family(kind, self.subjects, self.state_stream) for kind in KINDS),
            *(_dead_letter_family(s, self.subjects, self.dead_letter_stream) for s in RECONCILERS),
        )

    @classmethod
    def of_settings(cls, settings: NatsSettings) -> StreamSpec:
        """The streams that the service's settings name, with their limits."""
        return cls(
            name=settings.stream,
            subjects=Subjects(prefix=settings.subject_prefix),
            state_max_bytes=settings.state_max_bytes,
        )


SUBJECTS: tuple[SubjectFamily, ...] = StreamSpec().families
"""The topology with the default stream and prefix: what docs/bus.md's table shows."""


def publishes(service: str, spec: StreamSpec | None = None) -> tuple[str, ...]:
    """The subjects (with wildcards) that `service` writes: what NATS must let it publish."""
    families = (spec or StreamSpec()).families
    return tuple(f.wildcard for f in families if service in f.producers)


def reads(service: str, spec: StreamSpec | None = None) -> tuple[str, ...]:
    """The subjects (with wildcards) that `service` follows: its consumers' filters."""
    families = (spec or StreamSpec()).families
    return tuple(f.wildcard for f in families if service in f.readers)
