"""Simulated GPU nodes: Node objects that look like a GPU SKU to the scheduler and to kairyu.

The labels are the ones GPU Feature Discovery and the cloud put on real GPU nodes and that KAITO's
checks read (`nvidia.com/gpu.product`, `.count`, `.memory`, the well-known instance-type label).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
GPU_RESOURCE = "nvidia.com/gpu"


class GpuNodeSpec(BaseModel):
    """What a node of one GPU SKU offers."""

    model_config = ConfigDict(frozen=True)

    instance_type: str
    gpu_product: str
    """As GPU Feature Discovery reports it, e.g. Tesla-V100-PCIE-16GB."""
    gpu_count: int = Field(ge=1)
    gpu_memory_mib: int = Field(ge=1)
    """Memory of one GPU in MiB (the unit of the nvidia.com/gpu.memory label)."""
    cpu: str = "8"
    memory: str = "64Gi"
    ephemeral_storage: str = "256Gi"
    max_pods: int = 110


def gpu_node_manifest(
    name: str,
    spec: GpuNodeSpec,
    *,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A Node that kwok will keep Ready and whose GPUs the scheduler can hand out."""
    gpu_labels = {
        INSTANCE_TYPE_LABEL: spec.instance_type,
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": spec.gpu_product,
        "nvidia.com/gpu.count": str(spec.gpu_count),
        "nvidia.com/gpu.memory": str(spec.gpu_memory_mib),
    }
    return kwok_node_manifest(
        name,
        capacity={
            "cpu": spec.cpu,
            "memory": spec.memory,
            "ephemeral-storage": spec.ephemeral_storage,
            "pods": str(spec.max_pods),
            GPU_RESOURCE: str(spec.gpu_count),
        },
        labels={**gpu_labels, **(labels or {})},
        taints=taints,
    )


def kwok_node_manifest(
    name: str,
    *,
    capacity: dict[str, str],
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A Node that kwok will keep Ready, with this capacity (e.g. for kairyu's own pods)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                **(labels or {}),
            },
        },
        "spec": {"taints": taints or []},
        "status": {"capacity": capacity, "allocatable": capacity},
    }
