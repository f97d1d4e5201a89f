"""What a service may ask of the bus, whichever transport carries it (NATS or Service Bus).

The NATS `Bus` and the Service Bus one (issue 20) both satisfy `StateBus`; code that must work on
either (the watcher, the informer) is typed against it, so a method one transport lacks is a type
error, not a production surprise.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Protocol

from kairyu_contracts.objectstate import JSON, Kind, ObjectKey

if TYPE_CHECKING:
    from kairyu_core.bus._connection import Published
    from kairyu_core.bus._statestream import Change, Snapshot

SnapshotValues = dict[ObjectKey, tuple[JSON, str, str | None]]
"""A kind's current values as the watcher holds them: key → (trimmed value, digest, wake)."""
SnapshotSource = Callable[[Kind], SnapshotValues]
"""Called by the bus, when a snapshot's turn to be sent comes, for the values it carries."""


class StateBus(Protocol):
    """The objects' states on a bus: the watcher writes them, every service follows its kinds."""

    topology_ready: bool
    """False while the bus waits for its streams or entities (the service's /readyz says so)."""

    @property
    def serves_snapshots(self) -> bool:
        """Whether the watcher sends the snapshots followers start from.

        True on Service Bus, where nothing keeps the latest value per object; False on NATS,
        whose state stream is the snapshot.
        """
        ...

    @property
    def is_connected(self) -> bool: ...

    async def close(self) -> None: ...

    async def check_streams(self) -> None: ...

    async def wait_for_streams(self) -> None: ...

    async def create_streams(self) -> None: ...

    async def state_stream_identity(self) -> str | None: ...

    def follow_state(self, kind: Kind) -> AsyncGenerator[Snapshot | Change, None]: ...

    async def put_state(
        self, key: ObjectKey, value: JSON, *, digest: str, wake: str | None = None
    ) -> Published: ...

    async def delete_state(self, key: ObjectKey, *, uid: str | None) -> Published: ...

    async def dead_letter_reconcile(
        self, service: str, key: str, *, reason: str, error: str
    ) -> Published: ...

    async def broadcast_snapshot(self, kind: Kind, values_of: SnapshotSource) -> None:
        """Send every reader of `kind` the watcher's values (a starting watcher's first act)."""
        ...

    async def serve_snapshots(self, values_of: SnapshotSource) -> None:
        """Answer followers' snapshot requests until cancelled."""
        ...
