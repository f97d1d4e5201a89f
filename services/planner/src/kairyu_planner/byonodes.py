"""The GPUs of your own nodes, read from their labels, as the SKU a byo plan uses (pure).

With bring-your-own nodes (KAITO's `disableNodeAutoProvisioning`, kairyu's byo provisioner) a
Workspace names no instance type: its nodes are the Ready ones its `labelSelector` matches, and
what they offer comes from the labels NVIDIA's GPU Feature Discovery puts on them, as KAITO reads
them (`nvidia.com/gpu.product`, `.count`, `.memory` in MiB per GPU, `nvidia.com/cuda.compute.*`).
The matching nodes must agree on all three, as KAITO's webhook demands, so that one layout fits
each of them. The result is a SKU without a price (the nodes are yours) named as the nodes'
instance type, or their GPU product where they have no instance-type label; the byo provisioner
then picks nodes of that name.

KAITO refuses such a Workspace at admission while no node matches; kairyu explains it in
`Planned` and plans once matching nodes exist, so that nodes and Workspaces can come in any order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kairyu_contracts.api import LabelSelector
from kairyu_contracts.catalog import Cloud, GpuSku
from kairyu_planner.planning import PlanError, PlanReason

GPU_PRODUCT = "nvidia.com/gpu.product"
GPU_COUNT = "nvidia.com/gpu.count"
GPU_MEMORY = "nvidia.com/gpu.memory"
CC_MAJOR = "nvidia.com/cuda.compute.major"
CC_MINOR = "nvidia.com/cuda.compute.minor"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
_REQUIRED = (GPU_PRODUCT, GPU_COUNT, GPU_MEMORY)
_UNKNOWN_CC = 7.0
"""Compute capability assumed without the CUDA labels: float16, which every GPU runs."""


class NodesUnusableError(PlanError):
    """The nodes the selector matches do not (yet) say what they offer; asked again later."""


def _labels(node: Mapping[str, Any]) -> Mapping[str, str]:
    labels: Mapping[str, str] = (node.get("metadata") or {}).get("labels") or {}
    return labels


def _name(node: Mapping[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name") or "")


def _compute_capability(labels: Mapping[str, str]) -> float:
    try:
        return float(f"{int(labels[CC_MAJOR])}.{int(labels.get(CC_MINOR, '0'))}")
    except (KeyError, ValueError):
        return _UNKNOWN_CC


def byo_sku(nodes: Iterable[Mapping[str, Any]], selector: LabelSelector, cloud: Cloud) -> GpuSku:
    """The SKU the nodes matching `selector` make, or PlanError with KAITO's reason."""
    matching = sorted(
        (n for n in nodes if selector.matches(_labels(n))),
        key=_name,
    )
    if not matching:
        raise NodesUnusableError(
            PlanReason.NO_MATCHING_NODES,
            "No nodes found matching the specified label selector (bring-your-own nodes: "
            "label your GPU nodes to match resource.labelSelector)",
        )
    shapes: dict[tuple[str, str, str], list[str]] = {}
    for node in matching:
        labels = _labels(node)
        missing = [k for k in _REQUIRED if not labels.get(k)]
        if missing:
            raise NodesUnusableError(
                PlanReason.GPU_LABELS_MISSING,
                f"node {_name(node)} lacks the GPU label(s) {', '.join(missing)}, which NVIDIA's "
                f"GPU Feature Discovery sets: kairyu sizes your nodes from them",
            )
        shape = (labels[GPU_PRODUCT], labels[GPU_COUNT], labels[GPU_MEMORY])
        shapes.setdefault(shape, []).append(_name(node))
    if len(shapes) > 1:
        kinds = "; ".join(
            f"{', '.join(names[:3])}: {count} x {product} ({memory} MiB)"
            for (product, count, memory), names in sorted(shapes.items())
        )
        raise NodesUnusableError(
            PlanReason.NODES_NOT_UNIFORM,
            f"the nodes matching the label selector differ in GPU product, count or memory "
            f"({kinds}): narrow resource.labelSelector to one kind",
        )
    ((product, count_text, memory_text),) = shapes
    try:
        count = int(count_text)
        memory_gib = int(memory_text) / 1024
    except ValueError as exc:
        raise NodesUnusableError(
            PlanReason.GPU_LABELS_MISSING,
            f"node {_name(matching[0])} has GPU labels that are not numbers: "
            f"{GPU_COUNT}={count_text!r}, {GPU_MEMORY}={memory_text!r}",
        ) from exc
    if count <= 0 or memory_gib <= 0:
        raise NodesUnusableError(
            PlanReason.GPU_LABELS_MISSING,
            f"node {_name(matching[0])} reports {count} GPU(s) of {memory_gib:g} GiB",
        )
    types = {_labels(n).get(INSTANCE_TYPE) for n in matching}
    (instance_type,) = types if len(types) == 1 and None not in types else {product}
    return GpuSku(
        name=str(instance_type),
        cloud=cloud,
        gpu_model=product,
        gpu_count=count,
        gpu_memory_gib=memory_gib,
        compute_capability=_compute_capability(_labels(matching[0])),
    )
