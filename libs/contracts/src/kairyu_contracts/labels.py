"""The labels and annotations kairyu reads and writes, each defined once.

KAITO's names come first: a user's YAML, KAITO's own tools and `kubectl get -l` rely on them, so
kairyu puts them where KAITO does. kairyu's own are under `kairyu.io/`. A service that reads a
label another service writes imports it from here, so the two cannot drift apart.
"""

from __future__ import annotations

# ------------------------------------------------------------------ KAITO's labels
WORKSPACE_LABEL = "kaito.sh/workspace"
"""On every object made for a Workspace (NodeClaims, pods, Services, Jobs): the Workspace's name."""
WORKSPACE_NAMESPACE_LABEL = "kaito.sh/workspacenamespace"
"""With `WORKSPACE_LABEL` on cluster-scoped objects (Nodes, NodeClaims): the Workspace namespace."""
INFERENCESET_LABEL = "inferenceset.kaito.sh/created-by"
"""On an InferenceSet's Workspaces: the set's name."""
MULTIROLE_LABEL = "multiroleinference.kaito.sh/created-by"
"""On a MultiRoleInference's InferenceSets and their Workspaces: its name."""
ROLE_LABEL = "kaito.sh/inference-role"
"""On a MultiRoleInference's sets and pods: `prefill` or `decode`."""
MACHINE_TYPE_LABEL = "kaito.sh/machine-type"
"""On GPU nodes kairyu provisions (`gpu`), as KAITO's node provisioner labels them."""

# ------------------------------------------------------------------ KAITO's annotations
RUNTIME_ANNOTATION = "kaito.sh/runtime"
"""A Workspace's inference runtime: `vllm` (the default), `transformers` or `triton`."""
BYPASS_RESOURCE_CHECKS_ANNOTATION = "kaito.sh/bypass-resource-checks"
"""`True` lets a Workspace ask for fewer GPUs than its model needs (the planner warns only)."""
AUTO_PROVISION_ANNOTATION = "scaledobject.kaito.sh/auto-provision"
"""`"true"` on an InferenceSet: kairyu makes it a KEDA ScaledObject (docs/autoscaling.md)."""

# ------------------------------------------------------------------ kairyu's annotations
API_KEY_ANNOTATION = "kairyu.io/api-key-secret"
"""Names a Secret whose `api-key` the runtime then requires of every request."""
ALLOW_INGRESS_ANNOTATION = "kairyu.io/allow-ingress-from"
"""Namespaces (comma-separated) whose pods may call the Workspace's serving port."""
PINNED_NODES_ANNOTATION = "kairyu.io/pinned-nodes"
"""On a workload: the nodes its pods were pinned to (`status.workerNodes` when it was made)."""
