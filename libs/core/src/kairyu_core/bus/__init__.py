"""kairyu's bus on NATS JetStream; the only package that imports nats.

The watcher writes each object's latest state (`Bus.put_state` / `delete_state`); every service
follows the kinds it reads into its view (`Bus.follow_state`); a reconcile given up on is recorded
as a dead letter (`Bus.dead_letter_reconcile`). `topology` declares every subject, its writer and
its readers; `setup` is the one step that creates the streams.
"""

from kairyu_core.bus._connection import Bus, Published
from kairyu_core.bus._redacting import redact
from kairyu_core.bus._statestream import Change, Snapshot
from kairyu_core.bus.contract import SnapshotSource, SnapshotValues, StateBus
from kairyu_core.bus.outcomes import BusError, BusSettingsError, PermanentError, TemporaryError
from kairyu_core.bus.topology import (
    DEFAULT_STREAM,
    FOLLOWS,
    SUBJECTS,
    StreamSpec,
    SubjectFamily,
)

__all__ = [
    "DEFAULT_STREAM",
    "FOLLOWS",
    "SUBJECTS",
    "Bus",
    "BusError",
    "BusSettingsError",
    "Change",
    "PermanentError",
    "Published",
    "Snapshot",
    "SnapshotSource",
    "SnapshotValues",
    "StateBus",
    "StreamSpec",
    "SubjectFamily",
    "TemporaryError",
    "redact",
]


def _satisfies_the_contract(bus: Bus) -> StateBus:
    """Never called: mypy checks here that the NATS bus is a `StateBus`."""
    return bus
