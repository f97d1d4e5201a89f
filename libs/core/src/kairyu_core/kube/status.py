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

    The live object is read first, and its generation becomes the condition's observedGeneration.
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


async def report_conditions(
    client: KubeClient,
    live: JSON,
    reports: list[Report],
    *,
    field_manager: str,
    on_transition: Callable[[Report], None] | None = None,
) -> bool:
    """Apply these conditions to the object read as `live`, unless it already says exactly that.

    A service calls this on every event; skipping identical reports keeps pod heartbeats from
    turning into status writes. `on_transition` hears each condition whose status or reason
    changes (the services record a span event). Returns whether anything was written; a
    Workspace deleted meanwhile is not an error.
    """
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
    return True
