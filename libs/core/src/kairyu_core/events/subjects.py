"""NATS subjects: `<prefix>.v1.workspace.<event>.<namespace>.<name>` and the dead-letter subjects.

Namespace and name go into subject tokens so a consumer can filter on one Workspace and JetStream
can keep per-subject order. A Kubernetes name may contain dots, which NATS reads as token
separators, so dots are written as '_' (a character Kubernetes names never contain).
"""

from __future__ import annotations

from dataclasses import dataclass

from kairyu_core.events.envelope import Event

DEFAULT_PREFIX = "kairyu"
API_VERSION = "v1"


def _token(value: str) -> str:
    return value.replace(".", "_")


@dataclass(frozen=True)
class Subjects:
    """Subject names under one prefix (tests use a fresh prefix per test)."""

    prefix: str = DEFAULT_PREFIX

    @property
    def all_events(self) -> str:
        return f"{self.prefix}.{API_VERSION}.workspace.>"

    @property
    def all_dead_letters(self) -> str:
        return f"{self.prefix}.{API_VERSION}.deadletter.>"

    def of_event(self, event_type: type[Event], namespace: str = "*", name: str = "*") -> str:
        """The subject of one event type, for one Workspace or (with wildcards) all of them."""
        ns = namespace if namespace == "*" else _token(namespace)
        nm = name if name == "*" else _token(name)
        return f"{self.prefix}.{API_VERSION}.workspace.{event_type.event_name}.{ns}.{nm}"

    def for_event(self, event: Event) -> str:
        return self.of_event(type(event), event.workspace.namespace, event.workspace.name)

    def dead_letter(self, service: str, original_subject: str) -> str:
        """Where a message that `service` gave up on is copied, keeping its original subject."""
        suffix = original_subject.removeprefix(f"{self.prefix}.{API_VERSION}.")
        return f"{self.prefix}.{API_VERSION}.deadletter.{_token(service)}.{suffix}"
