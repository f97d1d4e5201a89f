"""Status conditions written by server-side apply, one field manager per service.

`status.conditions` is a list-map keyed by type, so each manager owns only the entries it
applies: the planner's apply of `Planned` leaves the provisioner's `ResourceReady` alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kairyu_core.api import Condition, ConditionStatus, set_condition
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
        self._last: dict[tuple[str, str], tuple[str, str, tuple[Report, ...]]] = {}

    @staticmethod
    def _key(live: JSON) -> tuple[str, str]:
        meta = live["metadata"]
        return str(meta.get("namespace") or ""), str(meta.get("name") or "")

    @staticmethod
    def _version(live: JSON) -> tuple[str, str]:
        meta = live["metadata"]
        return str(meta.get("uid") or ""), str(meta.get("resourceVersion") or "")

    def covers(self, live: JSON, reports: list[Report]) -> bool:
        """Whether exactly `reports` were written to the version `live` of the object."""
        last = self._last.get(self._key(live))
        return last is not None and last == (*self._version(live), tuple(reports))

    def remember(self, live: JSON, reports: list[Report]) -> None:
        key = self._key(live)
        self._last.pop(key, None)
        self._last[key] = (*self._version(live), tuple(reports))
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
) -> bool:
    """Apply these conditions to the object read as `live`, unless it already says exactly that.

    A service calls this on every event; skipping identical reports keeps pod heartbeats from
    turning into status writes. `on_transition` hears each condition whose status or reason
    changes (the services record a span event). Returns whether anything was written; a
    Workspace deleted meanwhile is not an error. With `reported`, `live` may be a view's copy
    that does not show the service's last write yet: the same reports written to the same
    version are not written again.
    """
    if reported is not None and reported.covers(live, reports):
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
    if unchanged:
        return False
    try:
        await apply_conditions(
            client,
            namespace=meta["namespace"],
            name=meta["name"],
            field_manager=field_manager,
            conditions=wanted,
        )
    except NotFoundError:
        return False
    if reported is not None:
        reported.remember(live, reports)
    return True
