"""JobStarted and WorkspaceSucceeded from the tuning Job and its pods (pure), KAITO's mapping.

KAITO's reasons (kairyu_contracts.api.conditions.TuningReason) so `status.state` and tools written
for KAITO read the same, with one refinement: JobStarted turns True when a pod actually runs, not
when the Job merely has an active pod, and a pod stuck before running (image pull, unschedulable)
gives its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kairyu_contracts.api.conditions import SucceededReason, TuningReason
from kairyu_contracts.workloads import pod_problem


@dataclass(frozen=True)
class TuningReport:
    """One condition's content."""

    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class TuningStatus:
    job_started: TuningReport
    succeeded: TuningReport


def _finished(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def tuning_status(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> TuningStatus:
    if job is None:
        waiting = TuningReport(False, SucceededReason.PENDING, "the tuning job is being created")
        return TuningStatus(waiting, waiting)
    status = job.get("status") or {}
    ordered = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
    problems = [p for pod in reversed(ordered) if (p := pod_problem(pod)) is not None]
    failed = _finished(job, "Failed")
    if failed is not None or (int(status.get("failed") or 0) > 0 and not status.get("active")):
        detail = problems[0].message if problems else (failed or {}).get("message", "")
        reason = problems[0].reason if problems else (failed or {}).get("reason", "Failed")
        message = f"tuning job failed: {reason}: {detail}"
        return TuningStatus(
            TuningReport(False, TuningReason.JOB_FAILED, message),
            TuningReport(False, SucceededReason.FAILED, message),
        )
    if _finished(job, "Complete") is not None or int(status.get("succeeded") or 0) > 0:
        return TuningStatus(
            TuningReport(True, TuningReason.STARTED, "the tuning job has run"),
            TuningReport(
                True, SucceededReason.SUCCEEDED, "tuning finished; the adapter is in the output"
            ),
        )
    running = [p for p in ordered if (p.get("status") or {}).get("phase") == "Running"]
    if running or int(status.get("ready") or 0) > 0:
        node = (running[-1].get("spec") or {}).get("nodeName", "") if running else ""
        where = f" on {node}" if node else ""
        return TuningStatus(
            TuningReport(True, TuningReason.STARTED, f"the tuning job is running{where}"),
            TuningReport(False, SucceededReason.PENDING, "the tuning job is running"),
        )
    if problems:
        stuck = TuningReport(False, problems[0].reason, problems[0].message)
        return TuningStatus(
            stuck, TuningReport(False, SucceededReason.PENDING, problems[0].message)
        )
    waiting = TuningReport(False, SucceededReason.PENDING, "the tuning job's pod is starting")
    return TuningStatus(waiting, waiting)
