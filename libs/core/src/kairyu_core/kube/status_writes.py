"""Status conditions written by server-side apply, one field manager per service.

`status.conditions` is a list-map keyed by type, so each manager owns only the entries it
applies: the planner's apply of `Planned` leaves the provisioner's `ResourceReady` alone.

A Workspace's status is always written with its summary (`apply_workspace_status`): the
`WorkspaceReady` condition and `status.state` that the status being written leads to. Every
writer includes them in every apply, so none of them ever drops the summary by omitting it (a
field manager's apply removes what it owned and no longer names), and a hand-off is one write.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from kairyu_contracts.api import (
    Condition,
    ConditionStatus,
    ConditionType,
    WorkspaceState,
    parse_workspace,
    set_condition,
)
from kairyu_contracts.api.summary import phase_durations, summarize
from kairyu_core import rollout_trace
from kairyu_core.kube.client import JSON, KubeClient
from kairyu_core.kube.errors import NotFoundError
from kairyu_core.kube.resources import WORKSPACES, Resource


async def apply_condition(
    client: KubeClient,
    *,
    namespace: str,
    name: str,
    field_manager: str,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    resource: Resource = WORKSPACES,
) -> JSON:
    """Apply one condition as `field_manager`, keeping lastTransitionTime when nothing changed.

    A low-level tool (tests, a person's script): it writes no summary, so the services use
    `apply_workspace_status` for Workspaces instead.

    The live object is read first, and its generation becomes the condition's observedGeneration:
    right for a caller that decides nothing from an earlier read. A service that decided on an
    object it read before names that object's generation instead (`report_conditions`, or
    `set_condition(observed_generation=...)` with `apply_conditions`), so that a condition never
    claims a generation its writer has not seen.
    """
    live = await client.get(resource, name, namespace=namespace)
    current = [
        Condition.model_validate(c) for c in (live.get("status") or {}).get("conditions") or []
    ]
    condition = set_condition(
        current,
        type=type,
        status=status,
        reason=reason,
        message=message,
        observed_generation=live["metadata"].get("generation"),
    )
    return await apply_conditions(
        client,
        namespace=namespace,
        name=name,
        field_manager=field_manager,
        conditions=[condition],
        resource=resource,
    )


async def apply_conditions(
    client: KubeClient,
    *,
    namespace: str,
    name: str,
    field_manager: str,
    conditions: list[Condition],
    resource: Resource = WORKSPACES,
) -> JSON:
    """Apply exactly these conditions as `field_manager`.

    Conditions this manager applied before and omits now are removed; other managers' stay.
    """
    return await apply_status(
        client,
        namespace=namespace,
        name=name,
        field_manager=field_manager,
        status={"conditions": [c.to_wire() for c in conditions]},
        resource=resource,
    )


async def apply_status(
    client: KubeClient,
    *,
    namespace: str,
    name: str,
    field_manager: str,
    status: JSON,
    resource: Resource = WORKSPACES,
) -> JSON:
    """Apply these status fields as `field_manager` (it owns exactly what it applies)."""
    body = {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": name, "namespace": namespace},
        "status": status,
    }
    return await client.apply(resource, body, field_manager=field_manager, subresource="status")


@dataclass(frozen=True)
class Outcome:
    """A rollout that a status write finishes: Ready, or Failed."""

    ready: bool
    state: WorkspaceState
    phases: dict[str, float]


def summarized(live: JSON, status: JSON) -> tuple[JSON, Outcome | None]:
    """`status` with the summary of the Workspace `live` once `status` is applied to it (pure).

    Returns the fields to apply and, when they turn `WorkspaceReady` True for this generation or
    the Workspace Failed, the rollout outcome to record.
    """
    merged = copy.deepcopy(live)
    now = dict(merged.get("status") or {})
    written = {c.get("type"): c for c in status.get("conditions") or []}
    kept = [c for c in now.get("conditions") or [] if c.get("type") not in written]
    now.update({k: v for k, v in status.items() if k != "conditions"})
    now["conditions"] = [*kept, *written.values()]
    merged["status"] = now
    try:
        workspace = parse_workspace(merged)
    except ValidationError:
        return _unreadable(live, status, written), None
    summary = summarize(workspace)
    generation = workspace.metadata.generation
    conditions = workspace.status.conditions if workspace.status else None
    before = _condition(live, ConditionType.WORKSPACE_READY)
    ready = set_condition(
        list(conditions or []),
        type=ConditionType.WORKSPACE_READY,
        status=summary.status,
        reason=summary.reason,
        message=summary.message,
        observed_generation=generation,
    )
    body = {
        **status,
        "conditions": [*written.values(), ready.to_wire()],
        "state": summary.state.value,
    }
    outcome = None
    was_ready = (
        before is not None
        and before.get("status") == ConditionStatus.TRUE.value
        and before.get("observedGeneration") == generation
    )
    if summary.status == ConditionStatus.TRUE and not was_ready:
        phases = phase_durations(workspace, datetime.now(UTC))
        outcome = Outcome(ready=True, state=summary.state, phases=phases)
    elif summary.state == WorkspaceState.FAILED and (live.get("status") or {}).get("state") != (
        WorkspaceState.FAILED.value
    ):
        outcome = Outcome(ready=False, state=summary.state, phases={})
    return body, outcome


def _condition(obj: JSON, kind: str) -> JSON | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


def _unreadable(live: JSON, status: JSON, written: dict[str, JSON]) -> JSON:
    """The summary of a Workspace the models cannot read (a newer or older CRD admitted it).

    Still written, so that a writer's apply never drops the summary it owned before: the first
    condition written that is not True says why, and the state stays what it was.
    """
    blocking = next((c for c in written.values() if c.get("status") != "True"), None)
    reason = str((blocking or {}).get("reason") or "Pending")
    message = (
        f"{blocking.get('type')}: {blocking.get('message', '')}"
        if blocking is not None
        else "the Workspace cannot be read"
    )
    old = _condition(live, ConditionType.WORKSPACE_READY)
    ready = Condition(
        type=ConditionType.WORKSPACE_READY,
        status=ConditionStatus.FALSE,
        reason=reason,
        message=message,
        observed_generation=live["metadata"].get("generation"),
        last_transition_time=datetime.now(UTC),
    ).to_wire()
    if old is not None and old.get("status") == ConditionStatus.FALSE.value:
        ready["lastTransitionTime"] = old.get("lastTransitionTime") or ready["lastTransitionTime"]
    state = (live.get("status") or {}).get("state") or WorkspaceState.PENDING.value
    return {**status, "conditions": [*written.values(), ready], "state": state}


_RECORDED_LIMIT = 10_000  # outcomes remembered per process, against recording one twice
_recorded: dict[tuple[str, int, bool], None] = {}


async def apply_workspace_status(
    client: KubeClient, *, live: JSON, status: JSON, field_manager: str, record: bool = True
) -> JSON:
    """Apply these status fields to the Workspace read as `live`, with the summary they lead to.

    The write that finishes a rollout records its outcome in the rollout's trace and its phase
    durations in `kairyu_rollout_phase_seconds`, once per process (a write from a view that
    does not show this process's earlier one would otherwise record it again); `record=False`
    leaves that to whoever finished it.
    """
    meta = live["metadata"]
    body, outcome = summarized(live, status)
    applied = await apply_status(
        client,
        namespace=meta["namespace"],
        name=meta["name"],
        field_manager=field_manager,
        status=body,
    )
    uid, generation = str(meta.get("uid") or ""), int(meta.get("generation") or 0)
    if outcome is not None and record and (uid, generation, outcome.ready) not in _recorded:
        _recorded[(uid, generation, outcome.ready)] = None
        if len(_recorded) > _RECORDED_LIMIT:
            del _recorded[next(iter(_recorded))]
        rollout_trace.record_outcome(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=uid,
            generation=generation,
            state=outcome.state.value,
            ready=outcome.ready,
        )
        rollout_trace.observe_phases(outcome.phases)
    return applied


@dataclass(frozen=True)
class Report:
    """What one condition should say."""

    type: str
    status: ConditionStatus
    reason: str
    message: str


class Reported:
    """What a service last wrote to each object, and which version of it the service read then.

    A service that reads its view learns of its own status write only when the watcher
    publishes the new version; a reconcile in between (a pod changed) still sees the version it
    wrote to and would write the same conditions again. While the view's version is still that
    one, the same reports are known to be written. Bounded: past `limit` objects the oldest is
    forgotten, which costs at most one repeated write.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self._limit = limit
        self._last: dict[tuple[str, str], tuple[str, str, tuple[Report, ...], str]] = {}

    @staticmethod
    def _key(live: JSON) -> tuple[str, str]:
        meta = live["metadata"]
        return str(meta.get("namespace") or ""), str(meta.get("name") or "")

    @staticmethod
    def _version(live: JSON) -> tuple[str, str]:
        meta = live["metadata"]
        return str(meta.get("uid") or ""), str(meta.get("resourceVersion") or "")

    def covers(self, live: JSON, reports: list[Report], fields: str = "") -> bool:
        """Whether exactly `reports` and `fields` (canonical JSON) went to the version `live`."""
        last = self._last.get(self._key(live))
        return last is not None and last == (*self._version(live), tuple(reports), fields)

    def remember(self, live: JSON, reports: list[Report], fields: str = "") -> None:
        key = self._key(live)
        self._last.pop(key, None)
        self._last[key] = (*self._version(live), tuple(reports), fields)
        if len(self._last) > self._limit:
            del self._last[next(iter(self._last))]


async def report_conditions(
    client: KubeClient,
    live: JSON,
    reports: list[Report],
    *,
    field_manager: str,
    on_transition: Callable[[Report], None] | None = None,
    reported: Reported | None = None,
    fields: JSON | None = None,
) -> bool:
    """Apply these conditions to the Workspace read as `live`, unless it already says exactly that.

    `fields`: other status fields the service owns (top-level keys of `status`), written with
    the conditions and compared like them.

    They go out with the summary they lead to (`apply_workspace_status`).

    A service calls this on every event; skipping identical reports keeps pod heartbeats from
    turning into status writes. `on_transition` hears each condition whose status or reason
    changes (the services record a span event). Returns whether anything was written; a
    Workspace deleted meanwhile is not an error. With `reported`, `live` may be a view's copy
    that does not show the service's last write yet: the same reports written to the same
    version are not written again.
    """
    fields = fields or {}
    written = _canonical(fields)
    if reported is not None and reported.covers(live, reports, written):
        return False
    meta = live["metadata"]
    current = [
        Condition.model_validate(c) for c in (live.get("status") or {}).get("conditions") or []
    ]
    generation = meta.get("generation")
    by_type = {c.type: c for c in current}
    unchanged = True
    wanted = []
    for report in reports:
        old = by_type.get(report.type)
        said = (report.status, report.reason, report.message, generation)
        if old is None or (old.status, old.reason, old.message, old.observed_generation) != said:
            unchanged = False
        if (old is None or (old.status, old.reason) != (report.status, report.reason)) and (
            on_transition is not None
        ):
            on_transition(report)
        wanted.append(
            set_condition(
                current,
                type=report.type,
                status=report.status,
                reason=report.reason,
                message=report.message,
                observed_generation=generation,
            )
        )
    live_status = live.get("status") or {}
    if unchanged and all(live_status.get(k) == v for k, v in fields.items()):
        return False
    try:
        await apply_workspace_status(
            client,
            live=live,
            status={**fields, "conditions": [c.to_wire() for c in wanted]},
            field_manager=field_manager,
        )
    except NotFoundError:
        return False
    if reported is not None:
        reported.remember(live, reports, written)
    return True


def _canonical(fields: JSON) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))
