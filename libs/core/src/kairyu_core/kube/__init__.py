"""kairyu's access to the Kubernetes API; the only package that imports kubernetes_asyncio."""

from kairyu_core.kube import errors, events, resources
from kairyu_core.kube.client import JSON, KubeClient
from kairyu_core.kube.owning import apply_owned
from kairyu_core.kube.status import (
    Report,
    apply_condition,
    apply_conditions,
    apply_status,
    report_conditions,
)
from kairyu_core.kube.watching import WatchEvent, watch

__all__ = [
    "JSON",
    "KubeClient",
    "Report",
    "WatchEvent",
    "apply_condition",
    "apply_conditions",
    "apply_owned",
    "apply_status",
    "errors",
    "events",
    "report_conditions",
    "resources",
    "watch",
]
