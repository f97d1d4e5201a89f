"""Where GPU nodes come from: existing nodes (byo), Karpenter NodeClaims, or AKS agent pools."""

from kairyu_provisioner.backends.base import Backend, Owned, Progress

__all__ = ["Backend", "Owned", "Progress"]
