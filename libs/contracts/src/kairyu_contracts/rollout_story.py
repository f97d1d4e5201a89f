"""Where a Workspace's rollout stands, in plain words (pure): `kairyu why`, and the watcher's Event.

The answer comes from the cluster alone: the Workspace's conditions, the Events kairyu recorded on
it (a SKU refused for quota, the re-plan that followed), its NodeClaims and its pods. The
Workspaces that finished here give how long the current phase usually takes, from their
conditions' transition times. Reading the cluster is the caller's job (kairyu_cli.commands for
`kairyu why`; the watcher, which records the same story as an Event on a Workspace whose phase is
slow); this module only explains what was read, so every case is tested without a cluster.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kairyu_contracts.api import ConditionType, parse_workspace
from kairyu_contracts.api.conditions import TUNING_FAILED_REASONS
from kairyu_contracts.api.summary import phase_durations
from kairyu_contracts.workloads import pod_problem

JSON = dict[str, Any]

_NODECLAIM_STEPS = ("Launched", "Registered", "Initialized")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # never print a terminal escape from a message
# Reasons a condition keeps while a person has to change something: kairyu retries nothing.
_NEEDS_A_CHANGE = {"InvalidSpec", "WorkloadInvalid", "InvalidTuningConfig", "UnknownPreset"}


@dataclass(frozen=True)
class Facts:
    """What `kairyu why` read for one Workspace."""

    workspace: JSON
    now: datetime
    events: Sequence[JSON] = ()
    """Events whose involvedObject is the Workspace."""
    node_claims: Sequence[JSON] = ()
    pods: Sequence[JSON] = ()
    others: Sequence[JSON] = ()
    """Other Workspaces of the cluster, for how long a phase usually takes here."""


@dataclass(frozen=True)
class Phase:
    name: str  # plan, provision, deploy, tune
    condition: ConditionType


@dataclass
class Answer:
    """The lines `kairyu why` prints, label first."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, text: str) -> None:
        self.lines.append((label, text))

    def render(self) -> str:
        width = max(len(label) for label, _ in self.lines)
        return "\n".join(
            f"{label + ':':<{width + 1}} {_CONTROL.sub(' ', text)}" for label, text in self.lines
        )


@dataclass(frozen=True)
class PhaseInProgress:
    """The phase a rollout is in, since when, and how long that is at `now`."""

    phase: Phase
    generation: int | None
    since: datetime
    elapsed_s: float


def phase_in_progress(workspace: JSON, now: datetime) -> PhaseInProgress | None:
    """The phase a rollout waits in; None when it is done, failed, or waits for a person.

    A rollout that waits for its spec to be fixed, or whose tuning failed, is not slow: nothing
    in the cluster will move it, and its condition already says what is wrong.
    """
    meta = workspace.get("metadata") or {}
    status = workspace.get("status") or {}
    generation = meta.get("generation")
    conditions = _conditions_of(status, generation)
    phases = _phases(bool(workspace.get("tuning")))
    current = _current(phases, conditions)
    if current is None or _failed(conditions, status):
        return None
    if any(c.get("reason") in _NEEDS_A_CHANGE for c in conditions.values()):
        return None
    start = _phase_start(current, phases, conditions, meta)
    if start is None:
        return None
    return PhaseInProgress(current, generation, start, (now - start).total_seconds())


def slow_phase_message(facts: Facts, progress: PhaseInProgress, limit_s: float) -> str:
    """The Event's message: the phase, how long it has run, and `kairyu why`'s story on one line.

    It starts with "<phase> (generation N)", which is how a restarted watcher knows it has told
    this one already.
    """
    told = dict(explain(facts).lines)
    parts = [
        f"{slow_phase_prefix(progress)} has run {_age(progress.elapsed_s)}, longer than "
        f"{_age(limit_s)}",
        *(
            f"{label}: {told[label]}"
            for label in ("waiting for", "last failure", "next", "usually")
            if label in told
        ),
    ]
    return _CONTROL.sub(" ", "; ".join(parts))


def slow_phase_prefix(progress: PhaseInProgress) -> str:
    return f"{progress.phase.name} (generation {progress.generation})"


def _conditions_of(status: JSON, generation: object) -> dict[str, JSON]:
    """The conditions written about `generation`, by type."""
    return {
        str(c.get("type")): c
        for c in status.get("conditions") or []
        if isinstance(c, dict) and c.get("observedGeneration") == generation
    }


def _current(phases: list[Phase], conditions: dict[str, JSON]) -> Phase | None:
    return next(
        (p for p in phases if (conditions.get(p.condition) or {}).get("status") != "True"), None
    )


def explain(facts: Facts) -> Answer:
    """The lines that explain one Workspace's rollout.

    Its state, its current phase and what that waits for, the last failure, what kairyu does
    next, and how long the phase usually takes here.
    """
    raw = facts.workspace
    meta = raw.get("metadata") or {}
    answer = Answer()
    answer.add("workspace", f"{meta.get('namespace')}/{meta.get('name')}")
    status = raw.get("status") or {}
    conditions = _conditions_of(status, meta.get("generation"))
    phases = _phases(bool(raw.get("tuning")))
    current = _current(phases, conditions)
    failed = _failed(conditions, status)
    state = status.get("state") or ("Failed" if failed else "Pending")
    answer.add("state", state)
    if current is None:
        done = conditions.get(phases[-1].condition) or {}
        answer.add("phase", f"done: {phases[-1].condition} since {_when(done, facts.now)}")
    else:
        condition = conditions.get(current.condition) or {}
        since = _since(current, phases, conditions, meta, facts.now)
        answer.add("phase", f"{current.name} ({current.condition}), {since}")
        answer.add("waiting for", _waiting_for(current, condition, facts))
    last = _last_failure(facts.events, conditions, facts.now)
    if last:
        answer.add("last failure", last)
    answer.add("next", _next(current, conditions, failed, facts))
    if current is not None:
        answer.add("usually", _usually(current, facts.others, facts.now))
    return answer


def _phases(tuning: bool) -> list[Phase]:
    last = (
        Phase("tune", ConditionType.WORKSPACE_SUCCEEDED)
        if tuning
        else Phase("deploy", ConditionType.INFERENCE_READY)
    )
    return [
        Phase("plan", ConditionType.PLANNED),
        Phase("provision", ConditionType.RESOURCE_READY),
        *([Phase("tune", ConditionType.JOB_STARTED)] if tuning else []),
        last,
    ]


def _failed(conditions: dict[str, JSON], status: JSON) -> bool:
    if status.get("state") == "Failed":
        return True
    return any((c.get("reason") in TUNING_FAILED_REASONS) for c in conditions.values())


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        at = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _age(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _when(condition: JSON, now: datetime) -> str:
    at = _parse_time(condition.get("lastTransitionTime"))
    if at is None:
        return "an unknown time"
    return f"{at:%H:%M:%S} ({_age((now - at).total_seconds())} ago)"


def _since(
    current: Phase, phases: list[Phase], conditions: dict[str, JSON], meta: JSON, now: datetime
) -> str:
    """Since the previous phase ended (or the Workspace was made), how long this one has run."""
    start = _phase_start(current, phases, conditions, meta)
    if start is None:
        return "for an unknown time"
    return f"since {start:%H:%M:%S} ({_age((now - start).total_seconds())})"


def _phase_start(
    current: Phase, phases: list[Phase], conditions: dict[str, JSON], meta: JSON
) -> datetime | None:
    """When the previous phase ended, or this generation's rollout began: the later one."""
    index = phases.index(current)
    previous = None
    if index > 0:
        previous = _parse_time(
            (conditions.get(phases[index - 1].condition) or {}).get("lastTransitionTime")
        )
    # A condition that stayed True across an edit keeps its old transition time: this
    # generation's rollout began at the edit, which the managed fields date.
    begun = _edited_at(meta) or _parse_time(meta.get("creationTimestamp"))
    candidates = [at for at in (previous, begun) if at is not None]
    return max(candidates) if candidates else None


def _edited_at(meta: JSON) -> datetime | None:
    """When someone other than kairyu last changed the spec (a later generation's start)."""
    if (meta.get("generation") or 1) <= 1:
        return None
    times = [
        at
        for entry in meta.get("managedFields") or []
        if isinstance(entry, dict)
        and not str(entry.get("manager", "")).startswith("kairyu")
        and not entry.get("subresource")
        and (at := _parse_time(entry.get("time"))) is not None
    ]
    return max(times) if times else None


def _waiting_for(current: Phase, condition: JSON, facts: Facts) -> str:
    said = _said(condition)
    if current.name == "plan":
        return said or "the planner has not looked at it yet"
    if current.name == "provision":
        claims = [
            _claim_progress(c, facts.now)
            for c in sorted(
                facts.node_claims, key=lambda c: str((c.get("metadata") or {}).get("name", ""))
            )
        ]
        claims = [c for c in claims if c]
        if claims:
            return "; ".join([*([said] if said else []), *claims])
        return said or "the provisioner has not asked for nodes yet"
    if current.name == "deploy":
        pods = [p for p in (_pod_problem(p) for p in facts.pods) if p]
        if pods:
            return "; ".join(pods[:3])
        return said or "the deployer has not made the workload yet"
    pods = [p for p in (_pod_problem(p) for p in facts.pods) if p]
    return "; ".join([*([said] if said else []), *pods[:2]]) or "the tuner has not made the Job yet"


def _said(condition: JSON) -> str:
    reason, message = condition.get("reason") or "", condition.get("message") or ""
    if not reason and not message:
        return ""
    return f"{reason}: {message}" if message else reason


def _claim_progress(claim: JSON, now: datetime) -> str:
    meta = claim.get("metadata") or {}
    if meta.get("deletionTimestamp"):  # discarded (a refused SKU): not what the rollout waits for
        return ""
    name = meta.get("name", "?")
    conditions = [
        c for c in (claim.get("status") or {}).get("conditions") or [] if isinstance(c, dict)
    ]
    done = {c.get("type") for c in conditions if c.get("status") == "True"}
    if "Ready" in done:
        return ""
    refused = next(
        (c for c in conditions if c.get("type") in _NODECLAIM_STEPS and c.get("status") == "False"),
        None,
    )
    reached = [step for step in _NODECLAIM_STEPS if step in done]
    missing = next((step for step in _NODECLAIM_STEPS if step not in done), "Ready")
    made = _parse_time(meta.get("creationTimestamp"))
    age = f", {_age((now - made).total_seconds())}" if made else ""
    so_far = ", ".join(reached) if reached else "created"
    why = f" ({_said(refused)})" if refused and _said(refused) else ""
    return f"NodeClaim {name}: {so_far}, not {missing}{age}{why}"


def _pod_problem(pod: JSON) -> str:
    meta = pod.get("metadata") or {}
    name = meta.get("name", "?")
    status = pod.get("status") or {}
    try:
        problem = pod_problem({**pod, "metadata": {**meta, "name": name}})
    except (KeyError, TypeError, ValueError):  # odd data: the checks below still apply
        problem = None
    if problem is not None and problem.reason != "ContainerCrashLoopBackOff":
        return problem.message  # the deployer's own words (OOM kill, eviction, image pull, …)
    # A crash loop: name its restarts and how the container last ended, what a user asks first.
    containers = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for container in containers:
        if not isinstance(container, dict):
            continue
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == "CrashLoopBackOff":
            restarts = container.get("restartCount", 0)
            last = (container.get("lastState") or {}).get("terminated") or {}
            ended = f"; last exit {last.get('exitCode')}: {last.get('reason')}" if last else ""
            where = f"pod {name}, container {container.get('name', '?')}"
            return f"{where}: CrashLoopBackOff (restarted {restarts} times{ended})"
    if status.get("phase") == "Pending":
        return f"pod {name}: Pending"
    if status.get("phase") == "Failed":
        return f"pod {name}: Failed: {status.get('reason') or status.get('message') or ''}"
    ready = any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return "" if ready or status.get("phase") == "Succeeded" else f"pod {name}: not Ready yet"


def _event_time(event: JSON) -> datetime | None:
    series = event.get("series") or {}
    for value in (
        event.get("lastTimestamp"),
        series.get("lastObservedTime") if isinstance(series, dict) else None,
        event.get("eventTime"),
        event.get("firstTimestamp"),
    ):
        if at := _parse_time(value):
            return at
    return _parse_time((event.get("metadata") or {}).get("creationTimestamp"))


def _last_failure(events: Sequence[JSON], conditions: dict[str, JSON], now: datetime) -> str:
    warnings = [e for e in events if e.get("type") == "Warning"]
    dated = [(at, e) for e in warnings if (at := _event_time(e)) is not None]
    if dated:
        at, event = max(dated, key=lambda pair: pair[0])
        count = event.get("count") or (event.get("series") or {}).get("count") or 1
        times = f" ({count} times)" if isinstance(count, int) and count > 1 else ""
        ago = _age((now - at).total_seconds())
        return f"{at:%H:%M:%S} ({ago} ago) {event.get('reason')}: {event.get('message')}{times}"
    failing = [
        c
        for c in conditions.values()
        if c.get("status") == "False"
        and (c.get("reason") in TUNING_FAILED_REASONS or c.get("reason") in _NEEDS_A_CHANGE)
    ]
    if failing:
        condition = failing[0]
        return f"{_when(condition, now)} {_said(condition)}"
    return ""


def _next(current: Phase | None, conditions: dict[str, JSON], failed: bool, facts: Facts) -> str:
    if any(c.get("reason") in _NEEDS_A_CHANGE for c in conditions.values()):
        return "nothing until the Workspace changes: what is wrong is in its spec"
    if failed:
        return (
            "nothing: the tuning Job failed and is not run again; change the Workspace "
            "(or delete and re-create it) to run it again"
        )
    if current is None:
        return "nothing: the rollout is done; kairyu acts again when the Workspace changes"
    condition = conditions.get(current.condition) or {}
    reason = condition.get("reason") or ""
    message = condition.get("message") or ""
    if reason in _NEEDS_A_CHANGE:
        return "nothing until the Workspace changes: what is wrong is in its spec"
    if current.name == "plan":
        if condition:
            return "the planner plans again when the Workspace or the nodes it may use change"
        return "the planner plans it as soon as it sees it (is the planner running?)"
    if current.name == "provision":
        if "asking the planner for another SKU" in message:
            return (
                "the planner re-plans to the next-cheapest SKU that fits; the provisioner then "
                "asks for those nodes"
            )
        if "gave up after" in message:
            return "nothing until the Workspace changes or the cloud's quota is raised"
        if "names this instance type" in message:
            return (
                "the provisioner asks for the same instance type again after a pause (the "
                "Workspace names it, so no other SKU is chosen); raise the quota or change it"
            )
        return (
            "the provisioner waits for the nodes to be Ready; if the cloud refuses the SKU for "
            "quota or capacity, it asks the planner for the next-cheapest one"
        )
    if current.name == "deploy":
        if any("CrashLoopBackOff" in p for p in map(_pod_problem, facts.pods)):
            return (
                "the kubelet keeps restarting the container (back-off up to 5 minutes); kairyu "
                "re-deploys when the Workspace changes (`kubectl logs` shows why it exits)"
            )
        return "the deployer waits for the pods; InferenceReady turns True when they are Ready"
    return "the tuner waits for the Job; WorkspaceSucceeded turns True when it completes"


def _usually(current: Phase, others: Sequence[JSON], now: datetime) -> str:
    seconds = []
    for raw in others:
        try:
            workspace = parse_workspace(raw)
            # Only first generations: a condition that stayed True across an edit keeps its
            # old transition time, so a later generation's phases cannot be timed from them.
            if workspace.metadata.generation != 1:
                continue
            took = phase_durations(workspace, now).get(current.name)
        except (ValidationError, TypeError, ValueError):
            continue
        finished = (raw.get("status") or {}).get("state") in ("Ready", "Succeeded")
        if took is not None and finished:
            seconds.append(took)
    if not seconds:
        return f"no finished {current.name} phase in this cluster to compare with"
    median = statistics.median(seconds)
    return (
        f"{current.name} took {_age(median)} here (median of {len(seconds)} finished "
        f"Workspace{'s' if len(seconds) != 1 else ''}; longest {_age(max(seconds))})"
    )
