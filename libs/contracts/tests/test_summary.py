"""WorkspaceReady and status.state from the other services' conditions."""

from datetime import UTC, datetime
from typing import Any

import pytest

from kairyu_contracts.api import ConditionStatus, WorkspaceState, WorkspaceV1Alpha1
from kairyu_contracts.api.summary import phase_durations, summarize
from kairyu_core.kube.status_writes import summarized
from kairyu_testing import seeds

T, F = "True", "False"


def workspace(
    seed: str,
    conditions: dict[str, tuple[str, str]],
    state: str | None = None,
    *,
    generation: int = 1,
    observed: dict[str, int | None] | None = None,
) -> WorkspaceV1Alpha1:
    """The seed at `generation`; each condition observed that generation unless `observed` says
    otherwise (None: written without observedGeneration)."""
    doc = seeds.seed(seed)
    doc["metadata"]["generation"] = generation
    now = datetime.now(UTC).isoformat()
    doc["status"] = {
        "conditions": [
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": f"{kind} says so",
                "lastTransitionTime": now,
                "observedGeneration": (observed or {}).get(kind, generation),
            }
            for kind, (status, reason) in conditions.items()
        ],
        "state": state,
    }
    return WorkspaceV1Alpha1.model_validate(doc)


ALL_READY = {"Planned": (T, "Planned"), "ResourceReady": (T, "x"), "InferenceReady": (T, "y")}


def test_inference_is_ready_when_plan_nodes_and_workload_are() -> None:
    summary = summarize(workspace("inference", ALL_READY))
    assert (summary.status, summary.reason, summary.state) == (
        ConditionStatus.TRUE,
        "WorkspaceReady",
        WorkspaceState.READY,
    )


def test_a_new_workspace_waits_for_the_planner() -> None:
    summary = summarize(workspace("inference", {}))
    assert (summary.status, summary.reason, summary.state) == (
        ConditionStatus.FALSE,
        "Pending",
        WorkspaceState.PENDING,
    )
    assert "Planned" in summary.message


def test_the_first_failing_condition_gives_its_reason() -> None:
    conditions = {
        "Planned": (T, "Planned"),
        "ResourceReady": (F, "QuotaExceeded"),
        "InferenceReady": (F, "Pending"),
    }
    summary = summarize(workspace("inference", conditions))
    assert summary.reason == "QuotaExceeded"
    assert summary.message == "ResourceReady: ResourceReady says so"


def test_a_workspace_that_served_once_is_not_ready_rather_than_pending() -> None:
    conditions = {**ALL_READY, "InferenceReady": (F, "ContainerCrashLoopBackOff")}
    assert (
        summarize(workspace("inference", conditions, state="Ready")).state
        == WorkspaceState.NOT_READY
    )
    assert (
        summarize(workspace("inference", conditions, state="NotReady")).state
        == WorkspaceState.NOT_READY
    )
    assert (
        summarize(workspace("inference", conditions, state="Pending")).state
        == WorkspaceState.PENDING
    )


def test_right_after_an_edit_the_previous_generations_conditions_do_not_make_it_ready() -> None:
    # Generation 2 was just written: every condition still speaks of generation 1.
    edited = workspace(
        "inference",
        ALL_READY,
        "Ready",
        generation=2,
        observed={"Planned": 1, "ResourceReady": 1, "InferenceReady": 1},
    )
    summary = summarize(edited)
    assert (summary.status, summary.reason, summary.message) == (
        ConditionStatus.FALSE,
        "Pending",
        "waiting for Planned of generation 2",
    )
    assert summary.state == WorkspaceState.NOT_READY  # it served once: KAITO's NotReady


def test_the_summary_waits_for_each_needed_condition_of_the_current_generation() -> None:
    replanned = workspace(
        "inference",
        ALL_READY,
        "Ready",
        generation=2,
        observed={"ResourceReady": 1, "InferenceReady": 1},
    )
    assert summarize(replanned).message == "waiting for ResourceReady of generation 2"
    provisioned = workspace(
        "inference", ALL_READY, "Ready", generation=2, observed={"InferenceReady": 1}
    )
    assert summarize(provisioned).message == "waiting for InferenceReady of generation 2"
    assert summarize(provisioned).status == ConditionStatus.FALSE
    everything = workspace("inference", ALL_READY, "NotReady", generation=2)
    assert (summarize(everything).status, summarize(everything).state) == (
        ConditionStatus.TRUE,
        WorkspaceState.READY,
    )


def test_a_condition_without_observed_generation_does_not_count() -> None:
    summary = summarize(workspace("inference", ALL_READY, generation=1, observed={"Planned": None}))
    assert (summary.status, summary.message) == (
        ConditionStatus.FALSE,
        "waiting for Planned of generation 1",
    )


def test_a_tuning_result_of_an_earlier_generation_is_not_this_ones() -> None:
    conditions = {
        "Planned": (T, "Planned"),
        "ResourceReady": (T, "x"),
        "JobStarted": (T, "WorkspaceTuningJobStatusStarted"),
        "WorkspaceSucceeded": (T, "workspaceSucceeded"),
    }
    summary = summarize(
        workspace("tuning", conditions, generation=3, observed={"WorkspaceSucceeded": 2})
    )
    assert (summary.status, summary.message, summary.state) == (
        ConditionStatus.FALSE,
        "waiting for WorkspaceSucceeded of generation 3",
        WorkspaceState.RUNNING,
    )


@pytest.mark.parametrize(
    ("conditions", "state", "ready"),
    [
        ({}, WorkspaceState.PENDING, F),
        ({"JobStarted": (F, "WorkspaceTuningJobStatusPending")}, WorkspaceState.PENDING, F),
        ({"JobStarted": (T, "WorkspaceTuningJobStatusStarted")}, WorkspaceState.RUNNING, F),
        (
            {
                "JobStarted": (F, "WorkspaceTuningJobStatusFailed"),
                "WorkspaceSucceeded": (F, "workspaceFailed"),
            },
            WorkspaceState.FAILED,
            F,
        ),
        (
            {
                "JobStarted": (T, "WorkspaceTuningJobStatusStarted"),
                "WorkspaceSucceeded": (T, "workspaceSucceeded"),
            },
            WorkspaceState.SUCCEEDED,
            T,
        ),
    ],
)
def test_tuning_state_follows_kaitos_mapping(
    conditions: dict[str, tuple[str, str]], state: WorkspaceState, ready: str
) -> None:
    base = {"Planned": (T, "Planned"), "ResourceReady": (T, "x")}
    summary = summarize(workspace("tuning", {**base, **conditions}))
    assert summary.state == state
    assert summary.status == ready


def test_phase_durations_come_from_the_transition_times() -> None:
    start = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    doc = seeds.seed("inference")
    doc["metadata"] |= {"creationTimestamp": start.isoformat(), "generation": 1}
    doc["status"] = {
        "conditions": [
            {
                "type": kind,
                "status": "True",
                "reason": "r",
                "message": "",
                "lastTransitionTime": start.replace(second=seconds).isoformat(),
            }
            for kind, seconds in (("Planned", 1), ("ResourceReady", 31), ("InferenceReady", 45))
        ]
    }
    ws = WorkspaceV1Alpha1.model_validate(doc)
    phases = phase_durations(ws, start.replace(second=50))
    assert phases == {"plan": 1.0, "provision": 30.0, "deploy": 14.0, "total": 50.0}
    doc["metadata"]["generation"] = 2  # a later generation: its start is not the creation time
    later = phase_durations(WorkspaceV1Alpha1.model_validate(doc), start.replace(second=50))
    assert set(later) == {"provision", "deploy"}


def _wire(kind: str, status: str, reason: str, generation: int = 1) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": f"{kind} says so",
        "lastTransitionTime": "2026-11-30T08:00:00Z",
        "observedGeneration": generation,
    }


def _live(*conditions: dict[str, Any], state: str | None = "Pending") -> dict[str, Any]:
    doc = seeds.seed("inference")
    doc["metadata"] |= {
        "name": "ws",
        "namespace": "ns",
        "uid": "u",
        "generation": 1,
        "creationTimestamp": "2026-11-30T07:59:00Z",
    }
    doc["status"] = {"conditions": list(conditions), "state": state}
    return doc


def test_a_status_write_carries_the_summary_it_leads_to_and_the_outcome_it_finishes() -> None:
    before = [_wire("Planned", T, "PlanCreated"), _wire("ResourceReady", T, "NodesReady")]
    inference = _wire("InferenceReady", T, "WorkspaceInferenceStatusSuccess")
    live = _live(*before)
    written: dict[str, Any] = {"conditions": [inference]}
    body, outcome = summarized(live, written)
    by_type = {c["type"]: c for c in body["conditions"]}
    assert set(by_type) == {"InferenceReady", "WorkspaceReady"}  # only what this writer says
    ready = by_type["WorkspaceReady"]
    assert (ready["status"], ready["observedGeneration"], body["state"]) == (T, 1, "Ready")
    assert outcome is not None
    assert outcome.ready
    assert set(outcome.phases) == {"plan", "provision", "deploy", "total"}
    # The same write again, once the Workspace says Ready: no second outcome.
    done = _live(*before, inference, ready, state="Ready")
    assert summarized(done, written)[1] is None


def test_a_step_that_does_not_finish_the_rollout_says_what_is_awaited() -> None:
    live = _live(_wire("Planned", T, "PlanCreated"))
    body, outcome = summarized(
        live, {"conditions": [_wire("ResourceReady", "Unknown", "Provisioning")], "workerNodes": []}
    )
    ready = {c["type"]: c for c in body["conditions"]}["WorkspaceReady"]
    assert (ready["status"], ready["reason"]) == (F, "Provisioning")
    assert body["workerNodes"] == []  # the writer's own fields go out untouched
    assert outcome is None


def test_a_workspace_the_models_cannot_read_still_gets_a_summary_from_the_raw_conditions() -> None:
    """Never dropped: a writer's apply without it would delete the summary it owned before."""
    live = _live(state="Ready")
    live["inference"] = "not an object"
    status = {"conditions": [_wire("Planned", F, "InvalidSpec")]}
    body, outcome = summarized(live, status)
    ready = {c["type"]: c for c in body["conditions"]}["WorkspaceReady"]
    assert (ready["status"], ready["reason"]) == (F, "InvalidSpec")
    assert ready["message"].startswith("Planned: ")
    assert body["state"] == "Ready"  # unknown: left as it was
    assert outcome is None
