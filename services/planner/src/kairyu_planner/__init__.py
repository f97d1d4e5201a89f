"""kairyu planner service.

Resolves the preset, validates the Workspace (KAITO's webhook rules), estimates GPU memory and
picks the GPU SKU, node count, parallelism and runtime arguments; serves the validating admission
webhook.

Only the package exists so far: the foundation (issue 2) lays out the workspace, and the service's
handlers arrive with its own issue. It must talk to the other services only over NATS.
"""
