"""The envelope every kairyu event shares: which Workspace, at which version, and when.

Events are hints for level-triggered handlers, so they carry identity and versions rather than a
copy of the spec; a handler re-reads the live Workspace before it writes. `schema_version` lets a
consumer refuse (dead-letter) an event from a future, incompatible producer instead of guessing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION: Literal[1] = 1


class _Meta(Protocol):
    @property
    def namespace(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def uid(self) -> str | None: ...
    @property
    def generation(self) -> int | None: ...
    @property
    def resource_version(self) -> str | None: ...


class _Object(Protocol):
    """What a Workspace model offers (kept structural: events do not import the API models)."""

    @property
    def api_version(self) -> str: ...
    @property
    def metadata(self) -> _Meta: ...


class WorkspaceRef(BaseModel):
    """The Workspace an event is about, at the version the producer saw."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field(min_length=1, max_length=63)
    name: str = Field(min_length=1, max_length=253)
    uid: str = Field(min_length=1)
    generation: int = Field(ge=0)
    resource_version: str = Field(min_length=1)
    api_version: str = "kaito.sh/v1beta1"

    @classmethod
    def of(cls, workspace: _Object) -> Self:
        """The reference to a Workspace as read from the apiserver."""
        meta = workspace.metadata
        return cls(
            namespace=meta.namespace or "default",
            name=meta.name or "",
            uid=meta.uid or "",
            generation=meta.generation or 0,
            resource_version=meta.resource_version or "",
            api_version=workspace.api_version,
        )

    @property
    def key(self) -> str:
        """namespace/name: events with the same key are handled in order."""
        return f"{self.namespace}/{self.name}"


class Event(BaseModel):
    """Base of all events. Subclasses set `event_name` (the subject token) and add fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_name: ClassVar[str]

    schema_version: Literal[1] = SCHEMA_VERSION
    workspace: WorkspaceRef
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def message_id(self) -> str:
        """Nats-Msg-Id: the same fact about the same object version is published once."""
        ws = self.workspace
        return f"{ws.uid}/{ws.generation}/{ws.resource_version}/{self.event_name}"
