"""Condition types and the one rule for updating a condition list.

KAITO's condition types are kept as KAITO spells them; `Planned` is kairyu's addition.
`lastTransitionTime` moves only when the status changes, as metav1.Condition requires, so a service
that re-applies the same observation does not make the condition look new.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from kairyu_contracts.api.meta import Condition, ConditionStatus


class ConditionType(StrEnum):
    """Condition types on a Workspace and the service that owns each."""

    PLANNED = "Planned"  # planner (kairyu's extension)
    NODE_CLAIM_READY = "NodeClaimReady"  # provisioner
    NODES_READY = "NodesReady"  # provisioner
    RESOURCE_READY = "ResourceReady"  # provisioner
    INFERENCE_READY = "InferenceReady"  # deployer
    JOB_STARTED = "JobStarted"  # tuner
    WORKSPACE_SUCCEEDED = "WorkspaceSucceeded"  # tuner
    WORKSPACE_READY = "WorkspaceReady"  # watcher (summary)
    WORKSPACE_DELETING = "WorkspaceDeleting"  # provisioner


class SucceededReason(StrEnum):
    """WorkspaceSucceeded's reasons, as KAITO spells them (the deployer's and the tuner's)."""

    PENDING = "workspacePending"
    SUCCEEDED = "workspaceSucceeded"
    FAILED = "workspaceFailed"


class TuningReason(StrEnum):
    """JobStarted's reasons, as KAITO spells them.

    The tuner writes them; the watcher's summary reads them (with SucceededReason.FAILED) to tell
    a failed tuning run from one still under way, so `status.state` says `Failed` as KAITO's does.
    """

    STARTED = "WorkspaceTuningJobStatusStarted"
    JOB_FAILED = "WorkspaceTuningJobStatusFailed"


TUNING_FAILED_REASONS = frozenset({TuningReason.JOB_FAILED, SucceededReason.FAILED})
"""The reasons that end a tuning Workspace in the Failed state."""


def set_condition(
    conditions: list[Condition] | None,
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    observed_generation: int | None = None,
    now: datetime | None = None,
) -> Condition:
    """The condition to write, keeping lastTransitionTime when the status has not changed."""
    previous = next((c for c in conditions or [] if c.type == type), None)
    changed = previous is None or previous.status != status
    return Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        observed_generation=observed_generation,
        last_transition_time=(now or datetime.now(UTC))
        if changed or previous is None
        else previous.last_transition_time,
    )
