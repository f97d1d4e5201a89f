"""InferenceReady and WorkspaceSucceeded from the workload and its pods (pure), KAITO's reasons.

The workload's counters say whether it is ready; when it is not, the pods say why: the first pod
problem found (image pull, crash loop, OOM kill, unschedulable, eviction) becomes the reason, with
the kubelet's or scheduler's own message, so `kubectl get workspace` shows the real cause instead
of "pending". Pods that could not even be created (refused by Pod Security admission) show
through the Deployment's ReplicaFailure condition, with the admission's message.

KAITO v0.12 sets `WorkspaceSucceeded` for inference Workspaces too (True once inference is
ready), and reports the serving replicas (the scale subresource's status) and the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kairyu_contracts.api.conditions import SucceededReason
from kairyu_contracts.workloads import MAX_MESSAGE, pod_problem

READY = "WorkspaceInferenceStatusSuccess"
PENDING = "WorkspaceInferenceStatusPending"


@dataclass(frozen=True)
class InferenceVerdict:
    ready: bool
    reason: str
    message: str


def inference_verdict(
    workload: dict[str, Any] | None, pods: list[dict[str, Any]]
) -> InferenceVerdict:
    """InferenceReady for the workload (Deployment or StatefulSet) and its pods."""
    if workload is None:
        return InferenceVerdict(False, PENDING, "the inference workload is being created")
    spec, status = workload.get("spec") or {}, workload.get("status") or {}
    wanted = int(spec.get("replicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    current = int(status.get("observedGeneration") or 0) >= int(
        workload["metadata"].get("generation") or 0
    )
    # As `kubectl rollout status` decides: every replica runs the current template, no old one is
    # left (a surge pod counts as updated before it is ready), and all of them are ready.
    revisions = status.get("currentRevision"), status.get("updateRevision")
    rolled = updated >= wanted and total <= wanted and revisions[0] == revisions[1]
    if current and wanted > 0 and rolled and ready >= wanted:
        return InferenceVerdict(True, READY, "Inference has been deployed successfully")
    # Pods the controller could not create (Pod Security admission, a quota): there is no pod to
    # explain it, only the Deployment's ReplicaFailure condition copied from its ReplicaSet.
    for cond in status.get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            reason = cond.get("reason") or "FailedCreate"
            return InferenceVerdict(
                False, reason, str(cond.get("message") or reason)[: MAX_MESSAGE * 4]
            )
    # Not (yet) ready at the current revision: a pod's problem is the reason, if there is one.
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if (problem := pod_problem(pod)) is not None:
            return InferenceVerdict(False, problem.reason, problem.message)
    kind = workload.get("kind", "workload")
    return InferenceVerdict(False, PENDING, f"{kind} {ready} of {wanted} replicas ready")


def succeeded(inference: InferenceVerdict) -> InferenceVerdict:
    """WorkspaceSucceeded of an inference Workspace, from its InferenceReady verdict."""
    if inference.ready:
        return InferenceVerdict(True, SucceededReason.SUCCEEDED, "workspace succeeds")
    if inference.reason == PENDING:
        return InferenceVerdict(
            False, SucceededReason.PENDING, f"inference is not ready: {inference.message}"
        )
    return InferenceVerdict(False, inference.reason, f"inference is not ready: {inference.message}")


def replicas_status(
    workload: dict[str, Any] | None, nodes_each: int, selector: dict[str, str]
) -> dict[str, Any]:
    """`status.inference`: the serving replicas the workload has and how many are ready.

    A replica spanning several nodes is that many pods; it counts once, and as ready only when
    all its pods are.
    """
    status = (workload or {}).get("status") or {}
    each = max(nodes_each, 1)
    return {
        "replicas": int(status.get("replicas") or 0) // each,
        "readyReplicas": int(status.get("readyReplicas") or 0) // each,
        "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
    }
