"""The local environment: a real Kubernetes control plane with kwok GPU nodes, and a nats-server.

Shared by the pytest plugin and `make dev`, so tests and developers run on the same thing.
"""

from kairyu_core.localenv.binaries import Binaries
from kairyu_core.localenv.cluster import LocalCluster
from kairyu_core.localenv.nats import LocalNats
from kairyu_core.localenv.nodes import GpuNodeSpec, gpu_node_manifest
from kairyu_core.localenv.processes import StartupError

__all__ = [
    "Binaries",
    "GpuNodeSpec",
    "LocalCluster",
    "LocalNats",
    "StartupError",
    "gpu_node_manifest",
]
