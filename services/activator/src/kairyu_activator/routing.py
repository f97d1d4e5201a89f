"""Which set a request is for, which of its pods serve, and the objects that route to it (pure).

An autoscaled set gets a Service of its own, `<set>`, whose selector is the set's label on every
pod of its replicas (`inferenceset.kaito.sh/created-by`), so callers have one address for all
replicas. While no pod of the set is ready, the activator adds an EndpointSlice of its own to that
Service (`<set>-activator`, managed by kairyu, so the EndpointSlice controller leaves it alone)
with its own address: a request then reaches the activator, which answers 503 with Retry-After
and counts it as load (kairyu_activator.load). Once a pod is ready the slice goes and the
Service's own endpoints carry the traffic.

The activator tells the sets apart by the Host a request names, as cluster DNS gives it:
`<set>.<namespace>[.svc[.<cluster domain>]]`, with or without a port, or `<set>` alone when
exactly one namespace has a set of that name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kairyu_contracts.labels import INFERENCESET_LABEL
from kairyu_contracts.workloads import controller_reference

JSON = dict[str, Any]
MANAGED_BY = "activator.kairyu.io"
SLICE_SUFFIX = "-activator"
PORT_NAME = "http"
SERVICE_PORT = 80


def set_key(namespace: str, name: str) -> str:
    return f"InferenceSet/{namespace}/{name}"


def set_of_host(host: str, sets: Mapping[str, Iterable[str]]) -> str | None:
    """The key of the set `host` names; `sets`: set name → the namespaces that have one."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("["):
        return None  # an IPv6 literal names no set
    name = name.rsplit(":", 1)[0] if ":" in name else name
    parts = name.split(".")
    namespaces = set(sets.get(parts[0], ()))
    if len(parts) == 1:
        return set_key(next(iter(namespaces)), parts[0]) if len(namespaces) == 1 else None
    if len(parts) == 2 or parts[2] == "svc":  # noqa: PLR2004 - <set>.<namespace>[.svc...]
        return set_key(parts[1], parts[0]) if parts[1] in namespaces else None
    return None


def _ready(pod: JSON) -> bool:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def ready_addresses(pods: Iterable[JSON], set_name: str) -> list[str]:
    """The IPs of the set's ready pods, sorted (its replicas' pods carry the set's label)."""
    return sorted(
        str(p["status"]["podIP"])
        for p in pods
        if ((p.get("metadata") or {}).get("labels") or {}).get(INFERENCESET_LABEL) == set_name
        and _ready(p)
    )


def _owner(inference_set: JSON) -> list[JSON]:
    return [
        controller_reference(inference_set, kind="InferenceSet", api_version="kaito.sh/v1beta1")
    ]


def set_service(inference_set: JSON, runtime_port: int) -> JSON:
    """The set's Service `<set>`: every ready pod of its replicas, port 80."""
    meta = inference_set["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": {INFERENCESET_LABEL: meta["name"]},
            "ownerReferences": _owner(inference_set),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {INFERENCESET_LABEL: meta["name"]},
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": SERVICE_PORT,
                    "targetPort": runtime_port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def activator_slice(inference_set: JSON, address: str, port: int) -> JSON:
    """The EndpointSlice that sends the set's Service to the activator while it is cold."""
    meta = inference_set["metadata"]
    family = "IPv6" if ":" in address else "IPv4"
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": meta["name"] + SLICE_SUFFIX,
            "namespace": meta["namespace"],
            "labels": {
                "kubernetes.io/service-name": meta["name"],
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
            "ownerReferences": _owner(inference_set),
        },
        "addressType": family,
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": PORT_NAME, "port": port, "protocol": "TCP"}],
    }
