"""The watcher: the one service that watches the apiserver.

It keeps the trimmed latest state of every Workspace, Node and object labelled `kaito.sh/workspace`
on the state stream, from which the other services build their views, and writes the summary
(`WorkspaceReady`, `status.state`) from the conditions the others own.
"""
