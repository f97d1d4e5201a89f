"""Events about Workspaces. Names are past-tense facts; each has its own subject token."""

from __future__ import annotations

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


ALL_EVENTS: tuple[type[Event], ...] = (WorkspaceObserved, WorkspaceDeleted, ObjectChanged)
"""Every event type on the wire; the contract test snapshots each one's JSON schema."""
