"""The state of one watched object as it travels on NATS: its kind, its key, and a trimmed body.

The watcher is the only component that watches the apiserver. What it sees of each Workspace and
of each labelled Node, NodeClaim, Deployment, StatefulSet, Job and Pod is kept on NATS as the
latest value per object (kairyu_core.bus, the state stream), and every service builds its view
from those values (kairyu_core.view). This module says, once, what such a value holds: the
object trimmed to what a service reads (identity, generation, resourceVersion, labels,
annotations, owner references, finalizers, deletion timestamp, the spec fields and status that
handlers decide on), without what only costs bytes and wakes consumers for nothing (managedFields,
a Node's images and heartbeat times, a workload's pod template).

One kind is not a Kubernetes kind: an `Occupant` is an object that holds a name one of a Workspace's
generated objects would take (kairyu_contracts.childnames) and that the Workspace does not control,
a user's Service named like the Workspace for instance. The watcher computes them from the names and
owners of every ConfigMap, Service, NetworkPolicy and workload, so the deployer and the tuner know
before their first apply whether a name is someone else's, without a GET.

Pure: no I/O, so the trimming and the keys are tested without NATS.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import orjson

from kairyu_contracts.labels import (
    INFERENCESET_LABEL,
    MULTIROLE_LABEL,
    WORKSPACE_LABEL,
    WORKSPACE_NAMESPACE_LABEL,
)

JSON = dict[str, Any]

Kind = Literal[
    "Workspace",
    "Node",
    "NodeClaim",
    "Deployment",
    "StatefulSet",
    "Job",
    "Pod",
    "Occupant",
    "InferenceSet",
    "MultiRoleInference",
]
KINDS: tuple[Kind, ...] = get_args(Kind)
CHILD_KINDS: tuple[Kind, ...] = tuple(k for k in KINDS if k != "Workspace")

CLUSTER_SCOPED = "_"
"""The namespace token of a cluster-scoped object (Node, NodeClaim): never a namespace name."""

_METADATA_KEPT = (
    "name",
    "namespace",
    "uid",
    "generation",
    "resourceVersion",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "deletionTimestamp",
    "creationTimestamp",
)
# kubectl's copy of the whole applied object: large, and nothing in kairyu reads it.
_DROPPED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})
_POD_STATUS_KEPT = (
    "phase",
    "podIP",  # where the activator asks a pod for its load
    "reason",
    "message",
    "conditions",
    "containerStatuses",
    "initContainerStatuses",
    "startTime",
)
_NODE_STATUS_KEPT = ("conditions", "allocatable", "capacity")


@dataclass(frozen=True, order=True)
class ObjectKey:
    """Which object: kind, namespace (`_` for a cluster-scoped one) and name."""

    kind: Kind
    namespace: str
    name: str

    @classmethod
    def of(cls, kind: Kind, obj: Mapping[str, Any]) -> ObjectKey:
        meta = obj.get("metadata") or {}
        return cls(kind, meta.get("namespace") or CLUSTER_SCOPED, str(meta.get("name") or ""))

    @property
    def path(self) -> str:
        """`namespace/name` (or `_/name`): the key within its kind."""
        return f"{self.namespace}/{self.name}"


def workspace_key(kind: Kind, obj: Mapping[str, Any]) -> str | None:
    """The `namespace/name` of the Workspace an object belongs to (its own, for a Workspace).

    A child names its Workspace by the labels kairyu and KAITO put on everything they create
    (`kaito.sh/workspace`, and `kaito.sh/workspacenamespace` on cluster-scoped objects); an
    object without them belongs to none.
    """
    meta = obj.get("metadata") or {}
    if kind == "Workspace":
        return f"{meta.get('namespace')}/{meta.get('name')}"
    labels = meta.get("labels") or {}
    name = labels.get(WORKSPACE_LABEL)
    namespace = labels.get(WORKSPACE_NAMESPACE_LABEL) or meta.get("namespace")
    if not name or not namespace:
        return None
    return f"{namespace}/{name}"


OCCUPANT_API_VERSION = "kairyu.io/v1"


PARENTS: Mapping[Kind, tuple[Kind, str]] = {
    "Workspace": ("InferenceSet", INFERENCESET_LABEL),
    "InferenceSet": ("MultiRoleInference", MULTIROLE_LABEL),
}
"""Which kind makes objects of a kind, and the label on each child that names its parent:
an InferenceSet makes Workspaces, a MultiRoleInference makes InferenceSets."""
PARENT_KINDS: tuple[Kind, ...] = tuple(parent for parent, _ in PARENTS.values())


def parent_key(kind: Kind, namespace: str, name: str) -> str:
    """The reconcile key of the parent object `kind` `namespace/name`: `<kind>/<ns>/<name>`.

    A Workspace's key is `<namespace>/<name>`, so one controller's queue holds both without a
    clash (a namespace is never named like a kind: kinds have capitals).
    """
    return f"{kind}/{namespace}/{name}"


def parent_of(kind: Kind, obj: Mapping[str, Any]) -> str | None:
    """The reconcile key of the object that made `obj` (by its created-by label), if any."""
    if kind not in PARENTS:
        return None
    meta = obj.get("metadata") or {}
    parent, label = PARENTS[kind]
    name = (meta.get("labels") or {}).get(label)
    return parent_key(parent, str(meta.get("namespace")), name) if name else None


def occupant_key(namespace: str, workspace: str, kind: str, name: str) -> ObjectKey:
    """The key of the Occupant holding `kind` `name` against the Workspace `workspace`."""
    return ObjectKey("Occupant", namespace, f"{workspace}.{kind.lower()}.{name}")


def occupant(
    namespace: str, workspace: str, kind: str, name: str, *, uid: str, controller: str | None
) -> JSON:
    """The state of an Occupant: which object holds the name, labelled with the Workspace.

    `controller` is the uid of the object's controller (None: it has none); the label makes a
    view file it under the Workspace it blocks, so its appearance and its removal wake that
    Workspace.
    """
    return {
        "apiVersion": OCCUPANT_API_VERSION,
        "kind": "Occupant",
        "metadata": {
            "namespace": namespace,
            "name": occupant_key(namespace, workspace, kind, name).name,
            "uid": uid,
            "labels": {WORKSPACE_LABEL: workspace},
        },
        "spec": {"kind": kind, "name": name, "uid": uid, "controller": controller},
    }


def trim(kind: Kind, obj: Mapping[str, Any]) -> JSON:
    """`obj` reduced to what the services read; a new dict (the input is not changed)."""
    meta = obj.get("metadata") or {}
    kept_meta: JSON = {k: meta[k] for k in _METADATA_KEPT if meta.get(k) is not None}
    annotations = dict(meta.get("annotations") or {})
    for dropped in _DROPPED_ANNOTATIONS & annotations.keys():
        del annotations[dropped]
    if annotations:
        kept_meta["annotations"] = annotations
    else:
        kept_meta.pop("annotations", None)
    body: JSON = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind") or kind}
    body["metadata"] = kept_meta
    status = dict(obj.get("status") or {})
    if kind == "Workspace":
        # KAITO's Workspace has no `spec`: its fields sit beside metadata and status.
        body |= {k: v for k, v in obj.items() if k not in {"metadata", "apiVersion", "kind"}}
        return body
    if kind == "Node":
        spec = obj.get("spec") or {}
        body["spec"] = {k: spec[k] for k in ("taints", "unschedulable", "providerID") if k in spec}
        kept = {k: status[k] for k in _NODE_STATUS_KEPT if k in status}
        if "conditions" in kept:  # a heartbeat rewrites lastHeartbeatTime and nothing else
            kept["conditions"] = [
                {k: v for k, v in c.items() if k != "lastHeartbeatTime"} for c in kept["conditions"]
            ]
        body["status"] = kept
        return body
    if kind == "Pod":
        spec = obj.get("spec") or {}
        body["spec"] = {"nodeName": spec["nodeName"]} if spec.get("nodeName") else {}
        for group in ("initContainers", "containers"):
            if limits := _memory_limits(spec.get(group)):
                body["spec"][group] = limits
        body["status"] = {k: status[k] for k in _POD_STATUS_KEPT if k in status}
        return body
    if kind in ("Deployment", "StatefulSet", "Job"):
        # The pod template is what the service itself wrote; it records a digest of it in an
        # annotation instead of reading it back.
        spec = {k: v for k, v in (obj.get("spec") or {}).items() if k != "template"}
        body["spec"] = spec
        body["status"] = status
        return body
    body["spec"] = obj.get("spec") or {}
    body["status"] = status
    return body


def _memory_limits(containers: Any) -> list[JSON]:
    """Each container's memory limit (only those that have one): an OOM kill's message names it."""
    kept: list[JSON] = []
    for c in containers or []:
        memory = ((c.get("resources") or {}).get("limits") or {}).get("memory")
        if memory is not None:
            kept.append({"name": c.get("name"), "resources": {"limits": {"memory": memory}}})
    return kept


def content_digest(value: Mapping[str, Any]) -> str:
    """A digest of a trimmed value less its resourceVersion: equal digests, nothing new to tell.

    A write that changes nothing kept (a heartbeat, a managedFields update) gives the object a new
    resourceVersion but the same digest, and is not published again.
    """
    meta = {k: v for k, v in (value.get("metadata") or {}).items() if k != "resourceVersion"}
    text = orjson.dumps({**value, "metadata": meta}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(text).hexdigest()[:32]


def kind_of(token: str) -> Kind:
    """The Kind named by a subject token (`nodeclaim` → `NodeClaim`); ValueError if none."""
    for kind in KINDS:
        if kind.lower() == token:
            return kind
    raise ValueError(f"no such kind: {token!r}")
