"""Subjects and the event envelope."""

import pytest
from pydantic import ValidationError

from kairyu_core.bus import backoff
from kairyu_core.events import Subjects, WorkspaceDeleted, WorkspaceObserved, WorkspaceRef

REF = WorkspaceRef(namespace="team-a", name="phi.3", uid="u-1", generation=2, resource_version="77")


def test_subjects_name_the_event_and_the_workspace() -> None:
    subjects = Subjects(prefix="kairyu")
    assert (
        subjects.for_event(WorkspaceObserved(workspace=REF))
        == "kairyu.v1.workspace.observed.team-a.phi_3"
    )
    assert subjects.of_event(WorkspaceDeleted) == "kairyu.v1.workspace.deleted.*.*"
    assert (
        subjects.dead_letter("planner", "kairyu.v1.workspace.observed.a.b")
        == "kairyu.v1.deadletter.planner.workspace.observed.a.b"
    )


def test_message_id_changes_with_the_object_version_and_the_event() -> None:
    observed = WorkspaceObserved(workspace=REF)
    assert observed.message_id == WorkspaceObserved(workspace=REF).message_id
    assert observed.message_id != WorkspaceDeleted(workspace=REF).message_id
    newer = REF.model_copy(update={"resource_version": "78"})
    assert observed.message_id != WorkspaceObserved(workspace=newer).message_id


def test_events_refuse_unknown_fields_and_future_schema_versions() -> None:
    data = WorkspaceObserved(workspace=REF).model_dump(mode="json")
    with pytest.raises(ValidationError):
        WorkspaceObserved.model_validate({**data, "surprise": 1})
    with pytest.raises(ValidationError):
        WorkspaceObserved.model_validate({**data, "schema_version": 2})


def test_backoff_doubles_and_caps() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff(50) == 60
