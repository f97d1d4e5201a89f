"""Pod-spec pieces and pod diagnosis shared by the services that run workloads (pure).

The deployer's inference pods and the tuner's Job pods land on the same provisioned GPU nodes,
copy OCI images' /data the same way, and fail for the same reasons; this module is that common
ground, so both report a pod problem in the same words.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]
WORKSPACE_LABEL = "kaito.sh/workspace"
WORKSPACE_NAMESPACE_LABEL = "kaito.sh/workspacenamespace"
GPU_TOLERATIONS: list[JSON] = [
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
]
MAX_MESSAGE = 256  # KAITO truncates pod messages to this
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
class Owner:
    """The Workspace that owns a workload's objects."""

    namespace: str
    name: str
    uid: str
    api_version: str
    kind: str

    @property
    def labels(self) -> dict[str, str]:
        return {WORKSPACE_LABEL: self.name, WORKSPACE_NAMESPACE_LABEL: self.namespace}

    def metadata(self, name: str) -> JSON:
        """Metadata of an owned object: Kubernetes deletes it with the Workspace."""
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": dict(self.labels),
            "ownerReferences": [
                {
                    "apiVersion": self.api_version,
                    "kind": self.kind,
                    "name": self.name,
                    "uid": self.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }


def node_affinity(nodes: list[str]) -> JSON:
    """Pin pods to exactly these nodes.

    metadata.name, not kubernetes.io/hostname: Karpenter sets the hostname label to the
    NodeClaim's name, which is not the node's. A field selector takes one value, so each node is a
    term of its own (terms are ORed).
    """
    terms = [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
        for node in sorted(nodes)
    ]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
        }
    }


def image_data_puller(
    *, name: str, image: str, puller_image: str, volume: str, mount: str, target: str
) -> JSON:
    """An init container that copies an image's /data into `target` (KAITO's skopeo puller)."""
    script = (
        "set -eu; "
        f"skopeo copy docker://{shlex.quote(image)} dir:/tmp/image; "
        "mkdir -p /tmp/rootfs; "
        "for layer in $(ls /tmp/image | grep -v -e json -e version); do "
        'tar -xf "/tmp/image/$layer" -C /tmp/rootfs; done; '
        f"mkdir -p {target}; cp -r /tmp/rootfs/data/. {target}/"
    )
    return {
        "name": name,
        "image": puller_image,
        "command": ["/bin/sh", "-c", script],
        "volumeMounts": [{"name": volume, "mountPath": mount}],
    }


@dataclass(frozen=True)
class PodProblem:
    reason: str
    message: str


def pod_problem(pod: JSON) -> PodProblem | None:
    """Why a pod is not doing its work, in KAITO's reason words, with the cluster's own message."""
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return _problem("PodEvicted", f"pod {name}: {status.get('message', 'evicted')}")
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return _problem("Unschedulable", f"pod {name}: {cond.get('message', '')}")
    init = status.get("initContainerStatuses") or []
    for container in init + (status.get("containerStatuses") or []):
        where = f"pod {name}, container {container['name']}"
        waiting = (container.get("state") or {}).get("waiting") or {}
        # Checked before the waiting reason: a container killed for memory again and again waits
        # in CrashLoopBackOff, and the memory is what the user has to change.
        if any(
            ((container.get(state) or {}).get("terminated") or {}).get("reason") == "OOMKilled"
            for state in ("state", "lastState")
        ):
            limit = _memory_limit(pod, container["name"])
            restarts = container.get("restartCount") or 0
            return _problem(
                "ContainerOOMKilled",
                f"{where}: killed for exceeding its memory limit ({limit}), "
                f"restarted {restarts} times",
            )
        reason = _WAITING_REASONS.get(waiting.get("reason", ""))
        if reason:
            return _problem(reason, f"{where}: {waiting.get('message') or waiting.get('reason')}")
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated and int(terminated.get("exitCode") or 0) != 0:
            detail = terminated.get("message") or terminated.get("reason") or "error"
            kind = "InitContainerFailed" if container in init else "ContainerFailed"
            return _problem(kind, f"{where} exited {terminated.get('exitCode')}: {detail}")
    return None


def _memory_limit(pod: JSON, container: str) -> str:
    spec = pod.get("spec") or {}
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        if c.get("name") == container:
            return str(((c.get("resources") or {}).get("limits") or {}).get("memory", "no limit"))
    return "no limit"


def _problem(reason: str, message: str) -> PodProblem:
    return PodProblem(reason, message[:MAX_MESSAGE])


class OtherServices:
    """Workspace generations whose workload another service runs: skipped without a read.

    The deployer and the tuner each get every Workspace's events. Within one generation a
    Workspace is inference or tuning for good (a spec change makes a new generation), so once a
    handler has read that a generation is not its kind, that generation's later events need no
    GET. Bounded: past `limit` entries the oldest is forgotten, which only costs a read.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._generations: dict[str, int] = {}  # uid -> generation; insertion ordered

    def remember(self, uid: str, generation: int) -> None:
        self._generations.pop(uid, None)
        self._generations[uid] = generation
        if len(self._generations) > self._limit:
            del self._generations[next(iter(self._generations))]

    def handle_elsewhere(self, uid: str, generation: int) -> bool:
        """Whether this generation of that Workspace is known to be another service's."""
        return self._generations.get(uid) == generation
