"""The local environment: a real Kubernetes control plane with kwok GPU nodes, and a nats-server.

Shared by the pytest plugin and `make dev`, so tests and developers run on the same thing.
"""

from kairyu_localenv.binaries import Binaries
from kairyu_localenv.cluster import LocalCluster
from kairyu_localenv.nats import LocalNats
from kairyu_localenv.nodes import GpuNodeSpec, gpu_node_manifest
from kairyu_localenv.processes import StartupError

__all__ = [
    "Binaries",
    "GpuNodeSpec",
    "LocalCluster",
    "LocalNats",
    "StartupError",
    "gpu_node_manifest",
]
