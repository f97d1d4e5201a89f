"""Real Karpenter, with its kwok cloud provider, running against the local control plane.

Karpenter's kwok provider launches a NodeClaim by creating a Node annotated `kwok.x-k8s.io/node`,
which the cluster's kwok then keeps Ready, so NodeClaims go through Karpenter's real lifecycle
(Launched → Registered → Initialized → Ready, finalizers, termination) with no cloud behind them.
Its instance types are generated from kairyu's SKU catalog, so a NodeClaim for
`Standard_NC12s_v3` becomes a node with two allocatable `nvidia.com/gpu`.

Besides the CRDs, the KWOKNodeClass every NodeClaim points at is installed; the provisioner
makes the NodePool its claims name when it starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kairyu_contracts.catalog import Catalog, GpuSku, load_catalog
from kairyu_localenv.binaries import run_build
from kairyu_localenv.cluster import LocalCluster
from kairyu_localenv.processes import Component, ManagedProcess, free_port, http_ok

BUILD_SCRIPT = Path("tools/karpenter/build.sh")
DIR_ENV = "KAIRYU_KARPENTER_DIR"
NODE_CLASS = {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"}
ZONE = "local-1"
# Simulated host resources per GPU; the catalog records GPUs only, and nothing here schedules by
# CPU or memory closely enough for the exact figures of each SKU to matter.
_CPU_PER_GPU = 12
_MEMORY_GIB_PER_GPU = 110


def locate() -> Path:
    """$KAIRYU_KARPENTER_DIR if set, else what the build script reports (it builds when cold)."""
    if env := os.environ.get(DIR_ENV):
        return Path(env)
    return run_build(BUILD_SCRIPT)


def instance_type(sku: GpuSku) -> dict[str, Any]:
    """One entry of Karpenter's kwok instance-types file for a catalog SKU."""
    price = sku.price.usd_per_hour if sku.price else 0.0
    return {
        "name": sku.name,
        "architecture": "amd64",
        "operatingSystems": ["linux"],
        "resources": {
            "cpu": str(_CPU_PER_GPU * sku.gpu_count),
            "memory": f"{_MEMORY_GIB_PER_GPU * sku.gpu_count}Gi",
            "ephemeral-storage": "2Ti",
            "nvidia.com/gpu": str(sku.gpu_count),
            "pods": "110",
        },
        "offerings": [
            {
                "Price": price,
                "Available": True,
                "Requirements": [
                    {
                        "key": "karpenter.sh/capacity-type",
                        "operator": "In",
                        "values": ["on-demand"],
                    },
                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [ZONE]},
                ],
            }
        ],
    }


class LocalKarpenter(Component):
    """Karpenter's kwok provider as a child process of the local cluster."""

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        directory: Path | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.cluster = cluster
        self.directory = directory or locate()
        self.catalog = catalog or load_catalog()
        self.ports = {"metrics": free_port(), "health": free_port()}
        self._process: ManagedProcess | None = None

    def install(self) -> None:
        """The CRDs and the node class (idempotent). The NodePool is the provisioner's to make."""
        crds = sorted((self.directory / "crds").glob("*.yaml"))
        for crd in crds:
            self.cluster.apply(crd)
        self.cluster.wait_for_crds(
            "nodeclaims.karpenter.sh", "nodepools.karpenter.sh", "kwoknodeclasses.karpenter.kwok.sh"
        )
        self.cluster.apply(
            {
                "apiVersion": f"{NODE_CLASS['group']}/v1alpha1",
                "kind": NODE_CLASS["kind"],
                "metadata": {"name": NODE_CLASS["name"]},
            }
        )

    def start(self, timeout: float = 60.0) -> None:
        self.install()
        types_file = self.cluster.workdir / "karpenter-instance-types.json"
        types_file.write_text(json.dumps([instance_type(s) for s in self.catalog.skus.values()]))
        proc = ManagedProcess(
            "karpenter",
            [str(self.directory / "karpenter-kwok")],
            log_dir=self.cluster.logs,
            env={
                "KUBECONFIG": str(self.cluster.kubeconfig),
                "DISABLE_LEADER_ELECTION": "true",
                "METRICS_PORT": str(self.ports["metrics"]),
                "HEALTH_PROBE_PORT": str(self.ports["health"]),
                "INSTANCE_TYPES_FILE_PATH": str(types_file),
                "SYSTEM_NAMESPACE": "kube-system",
                "LOG_LEVEL": "info",
            },
        )
        self._process = proc
        proc.start()
        proc.wait_until(
            http_ok(f"http://127.0.0.1:{self.ports['health']}/healthz"),
            timeout=timeout,
            what="/healthz",
        )

    @property
    def process(self) -> ManagedProcess | None:
        """Karpenter's process while it runs (its pid, its log); None before start, after stop."""
        return self._process

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
