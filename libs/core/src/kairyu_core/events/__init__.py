"""kairyu's public wire contract: event models and subject names."""

from kairyu_core.events.envelope import SCHEMA_VERSION, Event, WorkspaceRef
from kairyu_core.events.subjects import Subjects
from kairyu_core.events.workspaces import (
    ALL_EVENTS,
    NodesReady,
    ObjectChanged,
    PlanCreated,
    ReplanRequested,
    WorkspaceDeleted,
    WorkspaceObserved,
)

__all__ = [
    "ALL_EVENTS",
    "SCHEMA_VERSION",
    "Event",
    "NodesReady",
    "ObjectChanged",
    "PlanCreated",
    "ReplanRequested",
    "Subjects",
    "WorkspaceDeleted",
    "WorkspaceObserved",
    "WorkspaceRef",
]
