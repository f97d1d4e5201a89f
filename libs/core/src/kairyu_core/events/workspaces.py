"""Events about Workspaces. Names are past-tense facts; each has its own subject token."""

from __future__ import annotations

import hashlib
from typing import ClassVar, Literal

from pydantic import Field

from kairyu_core.events.envelope import Event


class WorkspaceObserved(Event):
    """The watcher saw a Workspace created, changed, or re-listed on resync."""

    event_name: ClassVar[str] = "observed"
    deleting: bool = False
    """The Workspace has a deletionTimestamp: finalizers are running."""


class WorkspaceDeleted(Event):
    """The Workspace is gone from the apiserver."""

    event_name: ClassVar[str] = "deleted"


class ObjectChanged(Event):
    """An object labelled with the Workspace (node, claim, workload, job, pod) changed.

    Normalized by the watcher so that services need no watches of their own: which object, how it
    changed, and at which resourceVersion. Handlers re-read what they need.
    """

    event_name: ClassVar[str] = "object-changed"
    kind: Literal["Node", "NodeClaim", "Deployment", "StatefulSet", "Job", "Pod"]
    object_name: str = Field(min_length=1)
    object_namespace: str | None = None
    object_uid: str = Field(min_length=1)
    object_resource_version: str = Field(min_length=1)
    change: Literal["ADDED", "MODIFIED", "DELETED"]

    @property
    def message_id(self) -> str:
        """One message per version of the object (the Workspace's own version is not the key)."""
        return f"{self.object_uid}/{self.object_resource_version}/{self.change}/{self.event_name}"


class PlanCreated(Event):
    """The planner wrote a plan to `status.plan`; the provisioner makes its nodes exist.

    Carries the shape for logs and traces; consumers read the live `status.plan` before acting.
    """

    event_name: ClassVar[str] = "plan-created"
    instance_type: str = Field(min_length=1)
    node_count: int = Field(ge=1)
    plan_digest: str = Field(min_length=1)
    """Hash of the plan: the same plan for the same generation is published once."""

    @property
    def message_id(self) -> str:
        ws = self.workspace
        return f"{ws.uid}/{ws.generation}/{self.plan_digest}/{self.event_name}"


class ReplanRequested(Event):
    """A service asks the planner to plan again without some SKUs (quota, capacity, allocation)."""

    event_name: ClassVar[str] = "replan-requested"
    excluded_instance_types: list[str] = Field(min_length=1)
    """SKUs the cloud refused for this Workspace; the planner remembers them in status.plan."""
    reason: str = Field(min_length=1)
    """The cloud's message, shown in the Planned condition."""


class NodesReady(Event):
    """The provisioner found the plan's nodes Ready with GPUs; the deployer or tuner goes next.

    Published on every check that finds them; the message id (the node set) lets JetStream drop
    the repeats, so a new event means a new set of nodes.
    """

    event_name: ClassVar[str] = "nodes-ready"
    instance_type: str = Field(min_length=1)
    node_names: list[str] = Field(min_length=1)
    """status.workerNodes: the nodes the workload must run on."""

    @property
    def message_id(self) -> str:
        ws = self.workspace
        nodes = ",".join(sorted(self.node_names))
        digest = hashlib.sha256(f"{self.instance_type}/{nodes}".encode()).hexdigest()[:16]
        return f"{ws.uid}/{ws.generation}/{digest}/{self.event_name}"


ALL_EVENTS: tuple[type[Event], ...] = (
    WorkspaceObserved,
    WorkspaceDeleted,
    ObjectChanged,
    PlanCreated,
    ReplanRequested,
    NodesReady,
)
"""Every event type on the wire; the contract test snapshots each one's JSON schema."""
