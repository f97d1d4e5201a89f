"""The wire contract: each event's JSON schema is pinned; a change must be deliberate.

A change that fails here is a contract change between services. Make it compatible (new optional
fields only) or bump schema_version, then refresh with `make snapshots` and commit.
"""

import json
import os
from pathlib import Path

import pytest

from kairyu_core.events import ALL_EVENTS, Event

SNAPSHOTS = Path(__file__).with_name("snapshots")


@pytest.mark.parametrize("event_type", ALL_EVENTS, ids=lambda t: t.__name__)
def test_event_schema_matches_snapshot(event_type: type[Event]) -> None:
    schema = json.dumps(event_type.model_json_schema(), indent=2, sort_keys=True) + "\n"
    path = SNAPSHOTS / f"{event_type.__name__}.json"
    if os.environ.get("KAIRYU_UPDATE_SNAPSHOTS"):
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(schema)
    assert path.exists(), f"no snapshot for {event_type.__name__}: run `make snapshots`"
    assert schema == path.read_text(), (
        f"{event_type.__name__}'s schema changed: see this module's docstring"
    )


def test_every_snapshot_has_an_event() -> None:
    names = {t.__name__ for t in ALL_EVENTS}
    assert {p.stem for p in SNAPSHOTS.glob("*.json")} <= names, (
        "an event was removed: that breaks consumers"
    )
