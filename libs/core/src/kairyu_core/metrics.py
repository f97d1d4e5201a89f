"""Prometheus metrics every service exports at /metrics (on the health port).

Reconciles are measured where every reconcile passes (the controller), Kubernetes API calls where
every call passes (KubeClient.request), states where the view takes them (the informer), and
rollout phase durations where a rollout ends (the status write that finishes it,
kairyu_core.kube.apply_workspace_status), so the services themselves carry no
metrics code. One process is one service, so the
default registry is the service's; the `service` label still names it for in-process test stacks.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_PHASE_SECONDS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)

KUBE_REQUESTS = Counter(
    "kairyu_kube_requests",
    "Requests to the Kubernetes API, by method, resource and response class",
    ["method", "resource", "code"],
)
RECONCILES = Counter(
    "kairyu_reconciles",
    "Reconciles a service ran, by outcome: ok, retried, gave_up",
    ["service", "outcome"],
)
RECONCILE_SECONDS = Histogram(
    "kairyu_reconcile_seconds",
    "Time one reconcile of one Workspace key took (any outcome)",
    ["service"],
    buckets=_SECONDS,
)
STATE_CHANGES = Counter(
    "kairyu_state_changes",
    "Object states a service's view took from the state stream, by kind",
    ["kind"],
)
ROLLOUT_PHASE_SECONDS = Histogram(
    "kairyu_rollout_phase_seconds",
    "How long each phase of a rollout took (plan, provision, deploy, tune, total)",
    ["phase"],
    buckets=_PHASE_SECONDS,
)


def exposition() -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
