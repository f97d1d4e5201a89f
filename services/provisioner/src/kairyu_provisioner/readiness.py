"""Which nodes can run a Workspace, and why the others cannot (pure).

A node counts when it is Ready, not being deleted or cordoned, of the planned instance type (or
named in preferredNodes, as KAITO allows), and offers allocatable `nvidia.com/gpu`, which means
its device plugin runs. Every node that does not count gets a short reason, so that "1 of 2 nodes
ready" comes with the why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kairyu_contracts.api import LabelSelector

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class Selection:
    """The nodes chosen for a Workspace and what kept the others out."""

    nodes: list[str]
    wanted: int
    rejected: dict[str, str]
    """Node name → why it does not count."""

    @property
    def complete(self) -> bool:
        return len(self.nodes) >= self.wanted

    def summary(self) -> str:
        text = f"{len(self.nodes)} of {self.wanted} nodes ready"
        if self.rejected:
            reasons = "; ".join(f"{n}: {r}" for n, r in sorted(self.rejected.items())[:5])
            more = len(self.rejected) - 5
            text += f" ({reasons}{f'; and {more} more' if more > 0 else ''})"
        return text


def gpus(node: Mapping[str, Any]) -> int:
    raw = ((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, "0")
    try:
        return int(str(raw))
    except ValueError:
        return 0


def why_unusable(
    node: Mapping[str, Any], instance_type: str, preferred: Iterable[str]
) -> str | None:
    """None when the node can run the Workspace, else the reason it cannot."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    if meta.get("deletionTimestamp"):
        return "being deleted"
    if (node.get("spec") or {}).get("unschedulable"):
        return "cordoned"
    node_type = labels.get(INSTANCE_TYPE_LABEL)
    # A plan for your own nodes (the planner's byo mode) names their instance type, or, for
    # nodes without that label, their GPU product.
    kinds = {(node_type or "").lower(), labels.get(GPU_PRODUCT_LABEL, "").lower()} - {""}
    if meta.get("name") not in set(preferred) and instance_type.lower() not in kinds:
        return f"instance type {node_type or 'unknown'}, not {instance_type}"
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "True":
        return "not Ready"
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("key") == "karpenter.sh/unregistered":
            return "not registered yet"
    if gpus(node) <= 0:
        return f"no allocatable {GPU_RESOURCE} (device plugin not running)"
    return None


def select(
    nodes: Iterable[Mapping[str, Any]],
    *,
    count: int,
    instance_type: str,
    preferred: Iterable[str] = (),
    current: Iterable[str] = (),
    selector: LabelSelector | None = None,
) -> Selection:
    """Pick `count` usable nodes: those already serving first, then preferred ones, then by name."""
    preferred = list(preferred)
    current_set = set(current)
    usable: list[str] = []
    rejected: dict[str, str] = {}
    for node in nodes:
        meta = node.get("metadata") or {}
        name = str(meta.get("name"))
        if selector is not None and not selector.matches(meta.get("labels") or {}):
            continue
        reason = why_unusable(node, instance_type, preferred)
        if reason is None:
            usable.append(name)
        else:
            rejected[name] = reason
    rank = {name: i for i, name in enumerate(preferred)}
    usable.sort(key=lambda n: (n not in current_set, rank.get(n, len(rank)), n))
    chosen = sorted(usable[:count])
    return Selection(nodes=chosen, wanted=count, rejected=rejected)
