"""kairyu's wire names: the NATS subjects of states and dead letters (`Subjects`).

The event models that lived here (WorkspaceObserved, PlanCreated, NodesReady, …) went with the
event stream when the services moved to views of the state stream (issue 15): nothing published
them any more. The states themselves are trimmed Kubernetes objects (`kairyu_core.objectstate`).
"""

from kairyu_core.events.subjects import Subjects

__all__ = ["Subjects"]
