"""kairyu watcher service.

Holds every Kubernetes watch (Workspaces and the objects labelled kaito.sh/workspace), publishes
normalized change events and aggregates WorkspaceReady / status.state.

Only the package exists so far: the foundation (issue 2) lays out the workspace, and the service's
handlers arrive with its own issue. It must talk to the other services only over NATS.
"""
