"""Deterministic names and the labels that tie cloud resources to their Workspace.

Names derive from the Workspace's uid and the SKU, never from a clock or a counter, so that a
provisioner restarted half-way asks for the same objects again and the cloud (or the apiserver)
answers "already there" instead of creating duplicates. The uid, not namespace/name, keeps a
deleted and re-created Workspace from adopting its predecessor's nodes.
"""

from __future__ import annotations

import hashlib

from kairyu_contracts.labels import WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL

UID_KEY = "kairyu.io/workspace-uid"
"""Annotation on NodeClaims, tag on agent pools: which Workspace instance owns them."""
FINALIZER = "kairyu.io/provisioner"
"""On Workspaces whose nodes the provisioner created: they are freed before the Workspace goes."""
GPU_TAINT = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
"""KAITO's taint on GPU nodes; only workloads that tolerate it land there."""
AGENT_POOL_NAME_LENGTH = 12  # AKS: ^[a-z][a-z0-9]{0,11}$ for Linux pools


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def node_claim_name(uid: str, instance_type: str, index: int) -> str:
    """`ws` and 9 hex digits, as KAITO names its NodeClaims; one name per node of the plan."""
    return "ws" + _digest(uid, instance_type.lower(), str(index))[:9]


def agent_pool_name(uid: str, instance_type: str) -> str:
    """`ws` and 10 hex digits: a valid AKS pool name, one per Workspace and SKU."""
    return "ws" + _digest(uid, instance_type.lower())[: AGENT_POOL_NAME_LENGTH - 2]


def workspace_labels(namespace: str, name: str) -> dict[str, str]:
    return {WORKSPACE_LABEL: name, WORKSPACE_NAMESPACE_LABEL: namespace}


def workspace_selector(namespace: str, name: str) -> str:
    """The label selector of everything provisioned for one Workspace."""
    return ",".join(f"{k}={v}" for k, v in workspace_labels(namespace, name).items())
