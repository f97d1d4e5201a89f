"""kairyu provisioner service.

Makes GPU nodes exist (existing nodes, Karpenter NodeClaims or AKS agent pools), waits until they
are Ready with GPUs allocatable, and frees them when the Workspace goes.

Only the package exists so far: the foundation (issue 2) lays out the workspace, and the service's
handlers arrive with its own issue. It must talk to the other services only over NATS.
"""
