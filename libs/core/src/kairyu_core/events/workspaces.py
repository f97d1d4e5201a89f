"""Events about Workspaces. Names are past-tense facts; each has its own subject token."""

from __future__ import annotations

from typing import ClassVar

from kairyu_core.events.envelope import Event


class WorkspaceObserved(Event):
    """The watcher saw a Workspace created, changed, or re-listed on resync."""

    event_name: ClassVar[str] = "observed"
    deleting: bool = False
    """The Workspace has a deletionTimestamp: finalizers are running."""


class WorkspaceDeleted(Event):
    """The Workspace is gone from the apiserver."""

    event_name: ClassVar[str] = "deleted"


ALL_EVENTS: tuple[type[Event], ...] = (WorkspaceObserved, WorkspaceDeleted)
"""Every event type on the wire; the contract test snapshots each one's JSON schema."""
