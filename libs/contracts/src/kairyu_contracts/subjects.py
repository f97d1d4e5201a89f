"""NATS subject names: `<prefix>.v1.state.<kind>.<namespace>.<name>` and the dead letters.

Namespace and name go into subject tokens so that the state stream keeps one message per object
and a follower can filter on one kind. A Kubernetes name may contain dots, which NATS reads as
token separators, so dots are written as '_' (a character Kubernetes names never contain).
Which service writes and reads each subject is declared in `kairyu_core.bus.topology`.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "kairyu"
API_VERSION = "v1"


def token(value: str) -> str:
    """`value` as one subject token (dots, NATS separators, become '_')."""
    return value.replace(".", "_")


@dataclass(frozen=True)
class Subjects:
    """Subject names under one prefix (tests use a fresh prefix per test)."""

    prefix: str = DEFAULT_PREFIX

    @property
    def state_prefix(self) -> str:
        """`<prefix>.v1.state`: the tokens every state subject starts with."""
        return f"{self.prefix}.{API_VERSION}.state"

    @property
    def all_states(self) -> str:
        return f"{self.state_prefix}.>"

    def states_of(self, kind: str) -> str:
        """Every object of one kind (`Pod`, …): a follower's filter."""
        return f"{self.state_prefix}.{kind.lower()}.>"

    @property
    def all_dead_letters(self) -> str:
        return f"{self.prefix}.{API_VERSION}.deadletter.>"

    def dead_letters_of(self, service: str) -> str:
        """Every dead letter of one service (its identity, `kairyu-<service>`)."""
        return f"{self.prefix}.{API_VERSION}.deadletter.{token(service)}.>"

    def reconcile(self, namespace: str, name: str) -> str:
        """The subject a given-up reconcile of the Workspace namespace/name is filed under."""
        return f"{self.prefix}.{API_VERSION}.workspace.reconcile.{token(namespace)}.{token(name)}"

    def dead_letter(self, service: str, original_subject: str) -> str:
        """Where `service` records what it gave up on, keeping the original subject's tail."""
        suffix = original_subject.removeprefix(f"{self.prefix}.{API_VERSION}.")
        return f"{self.prefix}.{API_VERSION}.deadletter.{token(service)}.{suffix}"
