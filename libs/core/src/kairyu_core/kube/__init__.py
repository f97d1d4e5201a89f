"""kairyu's access to the Kubernetes API; the only package that imports kubernetes_asyncio."""

from kairyu_core.kube import errors, resources, workspace_events
from kairyu_core.kube.client import JSON, KubeClient
from kairyu_core.kube.owning import (
    APPLIED_DIGEST_ANNOTATION,
    GoingConfirmation,
    OnceDeleter,
    applied_digest,
    apply_owned,
    check_free,
    confirmed_going,
    digest_of,
    owner_of,
    stamped,
)
from kairyu_core.kube.status_writes import (
    Report,
    Reported,
    apply_condition,
    apply_conditions,
    apply_status,
    apply_workspace_status,
    report_conditions,
)
from kairyu_core.kube.watching import WatchEvent, watch

__all__ = [
    "APPLIED_DIGEST_ANNOTATION",
    "JSON",
    "GoingConfirmation",
    "KubeClient",
    "OnceDeleter",
    "Report",
    "Reported",
    "WatchEvent",
    "applied_digest",
    "apply_condition",
    "apply_conditions",
    "apply_owned",
    "apply_status",
    "apply_workspace_status",
    "check_free",
    "confirmed_going",
    "digest_of",
    "errors",
    "owner_of",
    "report_conditions",
    "resources",
    "stamped",
    "watch",
    "workspace_events",
]
