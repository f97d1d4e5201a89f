"""`kairyu why` on the four rollouts a user asks about: held by quota, crash-looping, Ready, and a
failed tuning job. The objects are shaped as the apiserver returns them."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kairyu_contracts.rollout_story import Facts, explain, phase_in_progress, slow_phase_message
from kairyu_testing.seeds import seed

NOW = datetime(2026, 12, 1, 10, 5, 0, tzinfo=UTC)


def at(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    kind: str, status: str, reason: str, message: str = "", ago: float = 1
) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": 1,
        "lastTransitionTime": at(ago),
    }


def workspace(
    name: str, *conditions: dict[str, Any], state: str = "Pending", tuning: bool = False
) -> dict[str, Any]:
    raw = copy.deepcopy(seed("tuning" if tuning else "inference"))
    raw["metadata"].update(
        name=name,
        namespace="ml",
        uid=f"uid-{name}",
        generation=1,
        creationTimestamp=at(10),
    )
    raw["status"] = {"state": state, "conditions": list(conditions)}
    return raw


def lines(facts: Facts) -> dict[str, str]:
    return dict(explain(facts).lines)


def ready_workspace(name: str, provision_minutes: float) -> dict[str, Any]:
    """A finished rollout: planned at -9 min, nodes after `provision_minutes`, ready 1 min later."""
    return workspace(
        name,
        condition("Planned", "True", "PlanCreated", ago=9),
        condition("ResourceReady", "True", "NodesReady", ago=9 - provision_minutes),
        condition(
            "InferenceReady", "True", "WorkspaceInferenceStatusSuccess", ago=8 - provision_minutes
        ),
        condition("WorkspaceReady", "True", "WorkspaceReady", ago=8 - provision_minutes),
        state="Ready",
    )


def test_a_workspace_held_by_quota_says_so_and_that_the_planner_re_plans() -> None:
    refused = (
        "Standard_NC24ads_A100_v4: QuotaExceeded: 0 of 24 cores left in westus3; asking the "
        "planner for another SKU (re-plan 1 of 3)"
    )
    raw = workspace(
        "llama",
        condition("Planned", "True", "PlanCreated", ago=4),
        condition("ResourceReady", "False", "QuotaExceeded", refused, ago=2),
    )
    event = {
        "type": "Warning",
        "reason": "QuotaExceeded",
        "message": refused,
        "count": 1,
        "lastTimestamp": "2026-12-01T10:02:00Z",
    }
    claim = {
        "metadata": {"name": "wsabc-nc48-0", "creationTimestamp": at(2.2)},
        "status": {"conditions": [{"type": "Launched", "status": "True"}]},
    }
    others = [ready_workspace("fast", 1), ready_workspace("slow", 3), ready_workspace("mid", 2)]

    said = lines(Facts(raw, NOW, events=[event], node_claims=[claim], others=others))

    assert said["state"] == "Pending"
    assert said["phase"].startswith("provision (ResourceReady), since")
    assert "QuotaExceeded: Standard_NC24ads_A100_v4" in said["waiting for"]
    assert "NodeClaim wsabc-nc48-0: Launched, not Registered, 2m12s" in said["waiting for"]
    assert said["last failure"].startswith("10:02:00 (3m00s ago) QuotaExceeded:")
    assert said["next"].startswith("the planner re-plans to the next-cheapest SKU")
    assert said["usually"] == (
        "provision took 2m00s here (median of 3 finished Workspaces; longest 3m00s)"
    )


def test_a_crash_looping_workspace_names_the_pod_its_restarts_and_the_exit() -> None:
    raw = workspace(
        "phi",
        condition("Planned", "True", "PlanCreated", ago=8),
        condition("ResourceReady", "True", "NodesReady", ago=6),
        condition("InferenceReady", "False", "CrashLoopBackOff", "back-off restarting", ago=3),
    )
    pod = {
        "metadata": {"name": "phi-7d9f-x2"},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "model",
                    "restartCount": 5,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                }
            ],
        },
    }

    said = lines(Facts(raw, NOW, pods=[pod]))

    assert said["phase"] == "deploy (InferenceReady), since 09:59:00 (6m00s)"
    assert said["waiting for"] == (
        "pod phi-7d9f-x2, container model: CrashLoopBackOff (restarted 5 times; last exit 1: Error)"
    )
    assert "kubelet keeps restarting" in said["next"]
    assert said["usually"] == "no finished deploy phase in this cluster to compare with"


def test_a_ready_workspace_says_it_is_done_and_nothing_comes_next() -> None:
    raw = ready_workspace("done", 1)
    said = lines(Facts(raw, NOW, others=[raw]))
    assert said["state"] == "Ready"
    assert said["phase"] == "done: InferenceReady since 09:58:00 (7m00s ago)"
    assert said["next"].startswith("nothing: the rollout is done")
    assert "waiting for" not in said
    assert "last failure" not in said


def test_a_failed_tuning_job_gives_its_reason_and_says_it_is_not_run_again() -> None:
    failure = "the tuning job failed: dataset: no parquet, json, jsonl or csv file in /mnt/data"
    raw = workspace(
        "tune",
        condition("Planned", "True", "PlanCreated", ago=9),
        condition("ResourceReady", "True", "NodesReady", ago=8),
        condition("JobStarted", "False", "WorkspaceTuningJobStatusFailed", failure, ago=2),
        condition("WorkspaceSucceeded", "False", "workspaceFailed", failure, ago=2),
        state="Failed",
        tuning=True,
    )

    said = lines(Facts(raw, NOW))

    assert said["state"] == "Failed"
    assert said["phase"].startswith("tune (JobStarted)")
    assert said["waiting for"].startswith("WorkspaceTuningJobStatusFailed: the tuning job failed")
    assert said["last failure"] == f"10:03:00 (2m00s ago) WorkspaceTuningJobStatusFailed: {failure}"
    assert said["next"].startswith("nothing: the tuning Job failed and is not run again")


def test_a_new_workspace_waits_for_the_planner() -> None:
    said = lines(Facts(workspace("new"), NOW))
    assert said["phase"].startswith("plan (Planned), since 09:55:00")
    assert said["waiting for"] == "the planner has not looked at it yet"
    assert "is the planner running?" in said["next"]


def test_the_answer_renders_as_aligned_lines() -> None:
    text = explain(Facts(workspace("new"), NOW)).render()
    assert text.splitlines()[0] == "workspace:   ml/new"
    assert all(": " in line for line in text.splitlines())


def test_a_later_generation_is_timed_from_the_edit_not_from_old_transitions() -> None:
    # Planned stayed True across the edit, so its transition time is generation 1's (9 min ago).
    raw = workspace("edited", condition("Planned", "True", "PlanCreated", ago=9))
    raw["metadata"]["generation"] = 2
    raw["status"]["conditions"][0]["observedGeneration"] = 2
    raw["metadata"]["managedFields"] = [
        {"manager": "kubectl-client-side-apply", "operation": "Update", "time": at(1)},
        {
            "manager": "kairyu-planner",
            "operation": "Apply",
            "time": at(0.5),
            "subresource": "status",
        },
    ]
    said = lines(Facts(raw, NOW, others=[raw]))
    assert said["phase"] == "provision (ResourceReady), since 10:04:00 (1m00s)"
    # Conditions of generation 1 are not this rollout's.
    stale = workspace("stale", condition("Planned", "True", "PlanCreated", ago=9))
    stale["metadata"]["generation"] = 2
    assert lines(Facts(stale, NOW))["phase"].startswith("plan (Planned)")


def test_an_init_container_in_a_crash_loop_is_named() -> None:
    raw = workspace(
        "init",
        condition("Planned", "True", "PlanCreated", ago=8),
        condition("ResourceReady", "True", "NodesReady", ago=6),
    )
    pod = {
        "metadata": {"name": "init-0"},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [
                {
                    "name": "adapter-copy",
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                }
            ],
        },
    }
    said = lines(Facts(raw, NOW, pods=[pod]))
    assert said["waiting for"] == (
        "pod init-0, container adapter-copy: CrashLoopBackOff (restarted 3 times)"
    )
    assert "kubelet keeps restarting" in said["next"]


def test_a_named_instance_type_refused_for_quota_is_asked_for_again_not_replaced() -> None:
    refused = (
        "Standard_NC6s_v3: QuotaExceeded: no cores left; the Workspace names this instance "
        "type, so it is retried, not replaced"
    )
    raw = workspace(
        "named",
        condition("Planned", "True", "PlanCreated", ago=4),
        condition("ResourceReady", "False", "QuotaExceeded", refused, ago=2),
    )
    said = lines(Facts(raw, NOW))
    assert said["next"].startswith("the provisioner asks for the same instance type again")


def test_odd_cluster_data_is_explained_not_crashed_on() -> None:
    raw = workspace("odd", condition("Planned", "True", "PlanCreated", ago=4))
    raw["status"]["conditions"].append(None)
    raw["metadata"]["creationTimestamp"] = "2026-12-01T09:55:00"  # no zone
    event = {"type": "Warning", "reason": "X", "message": "\x1b[31mred", "count": "many"}
    other = ready_workspace("other", 1)
    other["metadata"]["creationTimestamp"] = "2026-12-01T09:55:00"
    facts = Facts(
        raw,
        NOW,
        events=[{**event, "lastTimestamp": "2026-12-01T10:00:00"}],
        node_claims=[{"status": {}}, {"metadata": {"name": "gone", "deletionTimestamp": at(1)}}],
        pods=[{"status": {"containerStatuses": [None]}}],
        others=[other],
    )
    text = explain(facts).render()
    assert "\x1b" not in text
    said = lines(facts)
    # A claim without metadata is still named; one being deleted (a discarded SKU) is not.
    assert said["waiting for"] == "NodeClaim ?: created, not Launched"
    assert said["phase"] == "provision (ResourceReady), since 10:01:00 (4m00s)"
    assert said["last failure"].startswith("10:00:00 (5m00s ago) X:")
    # A Workspace whose times cannot be compared is left out of the comparison.
    assert said["usually"] == "no finished provision phase in this cluster to compare with"


def test_a_phase_in_progress_is_timed_from_the_end_of_the_one_before() -> None:
    raw = workspace(
        "held",
        condition("Planned", "True", "PlanCreated", ago=4),
        condition("ResourceReady", "False", "NodeClaimPending", ago=3),
    )
    progress = phase_in_progress(raw, NOW)
    assert progress is not None
    assert (progress.phase.name, progress.generation, progress.elapsed_s) == ("provision", 1, 240)


@pytest.mark.parametrize(
    "conditions",
    [
        # Done: nothing to wait for.
        (
            condition("Planned", "True", "PlanCreated"),
            condition("ResourceReady", "True", "NodesReady"),
            condition("InferenceReady", "True", "WorkspaceInferenceStatusSuccess"),
        ),
        # Waits for a person to fix the spec: its condition says so already.
        (condition("Planned", "False", "InvalidSpec", "no such preset"),),
    ],
    ids=["ready", "invalid-spec"],
)
def test_no_phase_is_in_progress_when_nothing_in_the_cluster_will_move_it(
    conditions: tuple[dict[str, Any], ...],
) -> None:
    assert phase_in_progress(workspace("x", *conditions), NOW) is None


def test_a_slow_phase_message_tells_the_phase_and_then_what_kairyu_why_says() -> None:
    raw = workspace(
        "held",
        condition("Planned", "True", "PlanCreated", ago=8),
        condition("ResourceReady", "False", "NodeClaimPending", "waiting for 1 node", ago=7),
    )
    claim = {
        "metadata": {"name": "ws-nc6-0", "creationTimestamp": at(7)},
        "status": {"conditions": [{"type": "Launched", "status": "True"}]},
    }
    facts = Facts(raw, NOW, node_claims=[claim], others=[ready_workspace("fast", 1)])
    progress = phase_in_progress(raw, NOW)
    assert progress is not None

    message = slow_phase_message(facts, progress, limit_s=300)

    assert message.startswith("provision (generation 1) has run 8m00s, longer than 5m00s; ")
    assert "waiting for: NodeClaimPending: waiting for 1 node; NodeClaim ws-nc6-0: Launched" in (
        message
    )
    assert "; next: the provisioner waits for the nodes to be Ready" in message
    assert message.endswith(
        "usually: provision took 1m00s here (median of 1 finished Workspace; longest 1m00s)"
    )
