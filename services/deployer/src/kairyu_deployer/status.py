"""InferenceReady from the workload and its pods (pure), with KAITO's reasons.

The workload's counters say whether it is ready; when it is not, the pods say why: the first pod
problem found (image pull, crash loop, OOM kill, unschedulable, eviction) becomes the reason, with
the kubelet's or scheduler's own message, so `kubectl get workspace` shows the real cause instead
of "pending".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

READY = "WorkspaceInferenceStatusSuccess"
PENDING = "WorkspaceInferenceStatusPending"
_MAX_MESSAGE = 256  # KAITO truncates pod messages to this
_WAITING_REASONS = {
    "ErrImagePull": "ImagePullError",
    "ImagePullBackOff": "ImagePullError",
    "InvalidImageName": "ImagePullError",
    "CrashLoopBackOff": "ContainerCrashLoopBackOff",
    "CreateContainerConfigError": "ContainerStartError",
    "CreateContainerError": "ContainerStartError",
    "RunContainerError": "ContainerStartError",
}


@dataclass(frozen=True)
class Verdict:
    ready: bool
    reason: str
    message: str


def _pod_problem(pod: dict[str, Any]) -> Verdict | None:
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return Verdict(False, "PodEvicted", f"pod {name}: {status.get('message', 'evicted')}")
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return Verdict(False, "Unschedulable", f"pod {name}: {cond.get('message', '')}")
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    for container in statuses:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = _WAITING_REASONS.get(waiting.get("reason", ""))
        if reason:
            detail = waiting.get("message") or waiting.get("reason")
            return Verdict(False, reason, f"pod {name}, container {container['name']}: {detail}")
        terminated = (container.get("lastState") or {}).get("terminated") or {}
        if terminated.get("reason") == "OOMKilled":
            return Verdict(
                False,
                "ContainerOOMKilled",
                f"pod {name}, container {container['name']}: killed for exceeding its memory",
            )
    return None


def verdict(workload: dict[str, Any] | None, pods: list[dict[str, Any]]) -> Verdict:
    """InferenceReady for the workload (Deployment or StatefulSet) and its pods."""
    if workload is None:
        return Verdict(False, PENDING, "the inference workload is being created")
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
        return Verdict(True, READY, "Inference has been deployed successfully")
    # Not (yet) ready at the current revision: a pod's problem is the reason, if there is one.
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if (problem := _pod_problem(pod)) is not None:
            return Verdict(False, problem.reason, problem.message[:_MAX_MESSAGE])
    kind = workload.get("kind", "workload")
    return Verdict(False, PENDING, f"{kind} {ready} of {wanted} replicas ready")
