"""Pod-spec pieces and pod diagnosis shared by the services that run workloads (pure).

The deployer's inference pods and the tuner's Job pods land on the same provisioned GPU nodes,
copy OCI images' /data the same way, and fail for the same reasons; this module is that common
ground, so both report a pod problem in the same words.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from kairyu_contracts.labels import (
    PINNED_NODES_ANNOTATION,
    WORKSPACE_LABEL,
    WORKSPACE_NAMESPACE_LABEL,
)

JSON = dict[str, Any]
GPU_TOLERATIONS: list[JSON] = [
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
]
MAX_MESSAGE = 256  # KAITO truncates pod messages to this
RESTRICTED_CONTAINER: JSON = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
"""A container securityContext the `restricted` Pod Security level accepts (with non-root)."""
RUNTIME_DEFAULT_SECCOMP: JSON = {"type": "RuntimeDefault"}
# A URL's query string (signed-URL tokens live there) up to the next blank, quote or bracket.
_URL_QUERY = re.compile(r"(?P<url>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#\"'<>]*)\?[^\s\"'<>#]*")
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


def pinned_nodes(workload: JSON | None) -> list[str]:
    """The nodes a workload's pod template is pinned to by `node_affinity` (none: empty)."""
    annotations = ((workload or {}).get("metadata") or {}).get("annotations") or {}
    if annotation := annotations.get(PINNED_NODES_ANNOTATION):
        return sorted(n for n in str(annotation).split(",") if n)
    spec = (((workload or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    found = []
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("operator") == "In":
                found += [str(v) for v in field.get("values") or []]
    return sorted(found)


def image_data_puller(
    *, name: str, image: str, puller_image: str, volume: str, mount: str, target: str
) -> JSON:
    """An init container that copies an image's /data into `target` (KAITO's skopeo puller).

    `--no-same-owner`: the pod has no capabilities (CAP_CHOWN included), so tar must not try to
    give the files the layer's owners.
    """
    script = (
        "set -eu; "
        f"skopeo copy docker://{shlex.quote(image)} dir:/tmp/image; "
        "mkdir -p /tmp/rootfs; "
        "for layer in $(ls /tmp/image | grep -v -e json -e version); do "
        'tar --no-same-owner -xf "/tmp/image/$layer" -C /tmp/rootfs; done; '
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


def refused_creation(events: list[JSON]) -> str | None:
    """The latest FailedCreate message among a controller's events, if any.

    A StatefulSet or Job whose pods admission refuses (Pod Security, a quota) has no pod to
    explain it and no status condition saying so; its controller only records this event.
    """
    failed = [e for e in events if e.get("reason") == "FailedCreate"]
    if not failed:
        return None

    def when(event: JSON) -> str:
        meta = event.get("metadata") or {}
        return str(
            event.get("lastTimestamp")
            or event.get("eventTime")
            or meta.get("creationTimestamp")
            or ""
        )

    return str(max(failed, key=when).get("message") or "FailedCreate")


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


class WorkloadError(Exception):
    """What a Workspace asks for cannot be run as a workload; retrying cannot help.

    The message is for the Workspace's condition (reason WorkloadInvalid).
    """


class NameTakenError(WorkloadError):
    """An object kairyu would create already exists and is not the Workspace's."""


class InvalidTemplateError(WorkloadError):
    """A user-written pod template that is not a pod template."""


def controller_reference(obj: JSON, *, kind: str, api_version: str) -> JSON:
    """An owner reference that makes `obj` the controller of what carries it.

    The garbage collector deletes that with `obj`. `kind` and `api_version` are `obj`'s when it
    names none (a manifest as a test writes it).

    No blockOwnerDeletion: it would need `update` on the owner's finalizers where
    OwnerReferencesPermissionEnforcement is on, and nothing waits on these children.
    """
    meta = obj["metadata"]
    return {
        "apiVersion": obj.get("apiVersion", api_version),
        "kind": obj.get("kind", kind),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }


def controller_uid(obj: JSON) -> str | None:
    """The uid of the object's controller (the owner reference marked `controller: true`)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return str(ref.get("uid") or "") or None
    return None


def check_owned(obj: JSON, owner: Owner) -> None:
    """Raise NameTakenError unless the Workspace `owner` controls `obj`.

    The name alone proves nothing: a user's own Deployment or Service may carry it, and updating
    it would take it over (an owner reference that makes the garbage collector delete it later).
    """
    if controller_uid(obj) == owner.uid:
        return
    meta = obj.get("metadata") or {}
    raise name_taken(
        str(obj.get("kind") or "object"),
        str(meta.get("namespace") or owner.namespace),
        str(meta.get("name")),
        owner,
    )


def name_taken(kind: str, namespace: str, name: str, owner: Owner) -> NameTakenError:
    """The error for a name held by an object the Workspace `owner` does not own."""
    return NameTakenError(
        f"{kind} {namespace}/{name} already exists and is not owned by Workspace {owner.name}; "
        "kairyu leaves it untouched: delete or rename it, or rename the Workspace"
    )


def restrict(spec: JSON, *, run_as_user: int | None) -> JSON:
    """A generated pod spec with `restricted`-level defaults: what kairyu's pods need and no more.

    No API token (the runtime never calls the apiserver), RuntimeDefault seccomp, no privilege
    escalation and no capabilities in every container. `run_as_user` is the image's own non-root
    user when kairyu built the image (images/*/Dockerfile: USER 1000); for images of unknown
    users (KAITO's presets run as root) it is None and the pod may run as the image says.
    """
    pod_context: JSON = {"seccompProfile": dict(RUNTIME_DEFAULT_SECCOMP)}
    container_context: JSON = dict(RESTRICTED_CONTAINER)
    if run_as_user is not None:
        # fsGroup: the emptyDir volumes become writable by that user.
        pod_context |= {
            "runAsNonRoot": True,
            "runAsUser": run_as_user,
            "runAsGroup": run_as_user,
            "fsGroup": run_as_user,
            # A user's volume (a PVC of training data) is not re-chowned file by file each start.
            "fsGroupChangePolicy": "OnRootMismatch",
        }
        container_context["runAsNonRoot"] = True
    out = dict(spec)
    out["automountServiceAccountToken"] = False
    out["securityContext"] = pod_context
    for key in ("initContainers", "containers"):
        if key in out:
            out[key] = [{**c, "securityContext": dict(container_context)} for c in out[key]]
    return out


def template_defaults(spec: JSON) -> JSON:
    """A user's pod spec with kairyu's pod-level defaults where the user set nothing.

    What the user wrote wins (the admission webhook refuses privileged templates); what they left
    out gets no API token and RuntimeDefault seccomp.
    """
    out = dict(spec)
    out.setdefault("automountServiceAccountToken", False)
    context = out.get("securityContext")
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise InvalidTemplateError("inference.template.spec.securityContext must be an object")
    context = dict(context)
    context.setdefault("seccompProfile", dict(RUNTIME_DEFAULT_SECCOMP))
    out["securityContext"] = context
    return out


def redact_urls(text: str) -> str:
    """`text` with every URL's query string replaced: signed URLs carry their token there."""
    return _URL_QUERY.sub(r"\g<url>?REDACTED", text)


class KnownChildren:
    """uids of the objects a Workspace owns, as the last apply returned them.

    An object found here is applied with its uid, which the apiserver holds immutable: if it was
    replaced by someone else's object of the same name, the apply fails instead of taking that
    object over, and only then is it read. So ownership costs a GET per object and process, not
    per event. Bounded like OtherServices.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self._limit = limit
        self._uids: dict[tuple[str, str, str, str], str] = {}

    def uid(self, owner: Owner, kind: str, name: str) -> str | None:
        return self._uids.get((owner.uid, kind, owner.namespace, name))

    def remember(self, owner: Owner, kind: str, name: str, uid: str) -> None:
        key = (owner.uid, kind, owner.namespace, name)
        self._uids.pop(key, None)
        self._uids[key] = uid
        if len(self._uids) > self._limit:
            del self._uids[next(iter(self._uids))]

    def forget(self, owner: Owner, kind: str, name: str) -> None:
        self._uids.pop((owner.uid, kind, owner.namespace, name), None)
