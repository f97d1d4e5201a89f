"""The Workspace's summary: `WorkspaceReady` and `status.state`, derived from the other conditions.

Pure. Every service that writes a Workspace's status writes the summary of the status it leaves
behind in the same apply (`kairyu_core.kube.apply_workspace_status`), so a hand-off costs one
write and not a second one for the summary; the watcher checks each Workspace it sees and writes
only a summary that is stale (two services wrote at once, each from its own view).

KAITO's state mapping is kept; `WorkspaceReady` (the seed's column) is True
when every condition the Workspace's kind of work needs is True, and otherwise carries the reason
of the first one that is not.

Only conditions whose observedGeneration is the Workspace's generation count. Right after an edit
every condition still describes the previous generation; counting them would write
`WorkspaceReady=True` for a generation no service has handled yet. Every kairyu service sets
observedGeneration on every condition it writes, so a condition without one is not known to be
about this generation either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kairyu_contracts.api.conditions import TUNING_FAILED_REASONS, ConditionType
from kairyu_contracts.api.meta import Condition, ConditionStatus
from kairyu_contracts.api.workspace import Workspace, WorkspaceState

_INFERENCE_NEEDS = (
    ConditionType.PLANNED,
    ConditionType.RESOURCE_READY,
    ConditionType.INFERENCE_READY,
)
_TUNING_NEEDS = (
    ConditionType.PLANNED,
    ConditionType.RESOURCE_READY,
    ConditionType.JOB_STARTED,
    ConditionType.WORKSPACE_SUCCEEDED,
)


@dataclass(frozen=True)
class Summary:
    """The WorkspaceReady condition's content and the state."""

    status: ConditionStatus
    reason: str
    message: str
    state: WorkspaceState


def summarize(workspace: Workspace) -> Summary:
    """The summary of `workspace` from its conditions for its current generation."""
    generation = workspace.metadata.generation
    every = {c.type: c for c in (workspace.status.conditions if workspace.status else None) or []}
    conditions = {t: c for t, c in every.items() if c.observed_generation == generation}
    tuning = workspace.tuning is not None
    needs = _TUNING_NEEDS if tuning else _INFERENCE_NEEDS
    blocking = _first_not_true(conditions, needs)
    state = _tuning_state(conditions) if tuning else _inference_state(workspace, blocking is None)
    if blocking is None:
        done = "succeeded" if tuning else "is ready"
        return Summary(ConditionStatus.TRUE, "WorkspaceReady", f"Workspace {done}", state)
    if not blocking.reported:
        waiting = f"waiting for {blocking.type}"
        if blocking.type in every:  # reported, but for an earlier generation
            waiting += f" of generation {generation}"
        return Summary(ConditionStatus.FALSE, "Pending", waiting, state)
    return Summary(
        ConditionStatus.FALSE, blocking.reason, f"{blocking.type}: {blocking.message}", state
    )


def _first_not_true(
    conditions: dict[str, Condition], needs: tuple[ConditionType, ...]
) -> _Blocking | None:
    for needed in needs:
        condition = conditions.get(needed)
        if condition is None:
            return _Blocking(type=needed.value, reason="", message="", reported=False)
        if condition.status != ConditionStatus.TRUE:
            return _Blocking(condition.type, condition.reason, condition.message, reported=True)
    return None


@dataclass(frozen=True)
class _Blocking:
    """The first needed condition that is not True (or not reported for this generation yet)."""

    type: str
    reason: str
    message: str
    reported: bool


def _tuning_state(conditions: dict[str, Condition]) -> WorkspaceState:
    started = conditions.get(ConditionType.JOB_STARTED)
    succeeded = conditions.get(ConditionType.WORKSPACE_SUCCEEDED)
    if any(c is not None and c.reason in TUNING_FAILED_REASONS for c in (started, succeeded)):
        return WorkspaceState.FAILED
    if succeeded is not None and succeeded.status == ConditionStatus.TRUE:
        return WorkspaceState.SUCCEEDED
    if started is not None and started.status == ConditionStatus.TRUE:
        return WorkspaceState.RUNNING
    return WorkspaceState.PENDING


def _inference_state(workspace: Workspace, ready: bool) -> WorkspaceState:
    if ready:
        return WorkspaceState.READY
    previous = workspace.status.state if workspace.status else None
    if previous in (WorkspaceState.READY, WorkspaceState.NOT_READY):
        return WorkspaceState.NOT_READY  # it was serving once: say it stopped, not that it is new
    return WorkspaceState.PENDING


def phase_durations(workspace: Workspace, now: datetime) -> dict[str, float]:
    """Seconds each phase of a finished rollout took, from the conditions' transition times.

    plan: creation → Planned; provision: Planned → ResourceReady; deploy or tune: ResourceReady →
    InferenceReady / WorkspaceSucceeded; total: creation → now. Only a Workspace's first generation
    has a creation time that starts its rollout, so later generations report the phases after plan.
    """
    status = workspace.status
    at = {
        c.type: c.last_transition_time
        for c in (status.conditions if status else None) or []
        if c.status == ConditionStatus.TRUE
    }
    created = workspace.metadata.creation_timestamp if workspace.metadata.generation == 1 else None
    done = ConditionType.WORKSPACE_SUCCEEDED if workspace.tuning else ConditionType.INFERENCE_READY
    steps = [
        ("plan", created, at.get(ConditionType.PLANNED)),
        ("provision", at.get(ConditionType.PLANNED), at.get(ConditionType.RESOURCE_READY)),
        (
            "tune" if workspace.tuning else "deploy",
            at.get(ConditionType.RESOURCE_READY),
            at.get(done),
        ),
        ("total", created, now),
    ]
    return {
        phase: max((end - start).total_seconds(), 0.0)
        for phase, start, end in steps
        if start is not None and end is not None
    }
