"""A set's scale step as spans: the step, each new replica, and its wait for nodes (pure).

A change of an InferenceSet's replicas (`kubectl scale`, KEDA, the HPA) is a generation of the
set, so it gets a trace of its own, derived like a Workspace's from the set's uid and generation
(kairyu_core.rollout_trace). When the step is done (every wanted replica ready) the set
controller records, from the view's timestamps:

- `scale <before>→<wanted>`: from the reconcile that began the step to its end;
- under it, `replica <name>` for each replica it added: from the child's creation to its
  `InferenceReady`, itself split into `nodes <name>` (creation → `ResourceReady`: the wait for
  the GPU node) and `model <name>` (`ResourceReady` → `InferenceReady`: the pod's start).

Recorded after the fact with the Workspaces' own timestamps because the step spans many
reconciles; the replicas' own rollouts keep their full traces (`kairyu trace <ns>/<child>`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

JSON = dict[str, Any]


@dataclass
class ScaleStep:
    """One generation's change of a set's replicas, as the controller saw it begin."""

    key: str
    uid: str
    generation: int
    started: datetime
    before: int
    wanted: int
    created: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SpanPlan:
    """A span to record: its name, times, attributes and the spans beneath it."""

    name: str
    start: datetime
    end: datetime
    attributes: dict[str, Any] = field(default_factory=dict)
    children: tuple[SpanPlan, ...] = ()
    error: str | None = None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _became_true(child: JSON, kind: str) -> datetime | None:
    for condition in (child.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return _time(condition.get("lastTransitionTime"))
    return None


def _replica(child: JSON, now: datetime) -> SpanPlan | None:
    meta = child.get("metadata") or {}
    name = str(meta.get("name") or "")
    created = _time(meta.get("creationTimestamp"))
    if created is None:
        return None
    nodes = _became_true(child, "ResourceReady")
    serving = _became_true(child, "InferenceReady")
    end = max(serving or now, created)
    parts: list[SpanPlan] = []
    if nodes is not None:
        nodes = min(max(nodes, created), end)
        parts.append(SpanPlan(f"nodes {name}", created, nodes, {"kairyu.workspace": name}))
        if serving is not None:
            parts.append(SpanPlan(f"model {name}", nodes, end, {"kairyu.workspace": name}))
    return SpanPlan(
        f"replica {name}",
        created,
        end,
        {"kairyu.workspace": f"{meta.get('namespace')}/{name}"},
        tuple(parts),
        None if serving is not None else "not ready when the step ended",
    )


def step_spans(
    step: ScaleStep, children: list[JSON], *, now: datetime, superseded: bool = False
) -> SpanPlan:
    """The spans of `step`, from the set's children as the view holds them at its end."""
    by_name = {str((c.get("metadata") or {}).get("name")): c for c in children}
    replicas = [
        span
        for name in step.created
        if name in by_name and (span := _replica(by_name[name], now)) is not None
    ]
    attributes: dict[str, Any] = {
        "kairyu.inferenceset": step.key,
        "kairyu.generation": step.generation,
        "kairyu.replicas.before": step.before,
        "kairyu.replicas.wanted": step.wanted,
    }
    if step.created:
        attributes["kairyu.replicas.added"] = list(step.created)
    if step.removed:
        attributes["kairyu.replicas.removed"] = list(step.removed)
    started = min([step.started, *(r.start for r in replicas)])
    return SpanPlan(
        f"scale {step.before}→{step.wanted}",
        started,
        max(now, started),
        attributes,
        tuple(replicas),
        "superseded by another scale step before it was done" if superseded else None,
    )


def utc_now() -> datetime:
    return datetime.now(UTC)
