"""Writes the status of an object that makes others (InferenceSet, MultiRoleInference).

And asks, before it makes a child, whether the parent still exists (`still_there`).

Both controllers decide a whole status from the view (conditions and a few counts) and write it
only when it differs from what the view holds, keeping a condition's lastTransitionTime while its
status stays the same. Server-side apply as the planner: it owns exactly the fields it writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from kairyu_core.kube import KubeClient, apply_status, errors
from kairyu_core.kube.resources import Resource

JSON = dict[str, Any]
_COMPARED = ("status", "reason", "message", "observedGeneration")


def unchanged(
    current: JSON, status: JSON, fields: Iterable[str], conditions: Iterable[str] = ()
) -> bool:
    """Whether `status` says what the current status says (conditions and `fields`).

    `conditions`: the types the writer owns; one of them present now but not in `status` is a
    change (its removal).
    """
    old = {c.get("type"): c for c in current.get("conditions") or []}
    new_types = {c["type"] for c in status.get("conditions") or []}
    if any(t in old and t not in new_types for t in conditions):
        return False
    for new in status.get("conditions") or []:
        before = old.get(new["type"])
        if before is None or any(before.get(k) != new.get(k) for k in _COMPARED):
            return False
    return all(current.get(k) == status.get(k) for k in fields)


def with_transition_times(current: JSON, status: JSON) -> JSON:
    """`status` with each condition's lastTransitionTime: kept while its status is unchanged."""
    old = {c.get("type"): c for c in current.get("conditions") or []}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = []
    for new in status.get("conditions") or []:
        before = old.get(new["type"])
        same = before is not None and before.get("status") == new["status"]
        kept = before.get("lastTransitionTime") if same and before is not None else None
        conditions.append({**new, "lastTransitionTime": kept or now})
    return {**status, "conditions": conditions}


async def write_status(
    kube: KubeClient,
    resource: Resource,
    obj: JSON,
    status: JSON,
    *,
    fields: Iterable[str],
    field_manager: str,
    conditions: Iterable[str] = (),
) -> None:
    """Apply `status` to `obj` (as the view holds it) unless it says nothing new."""
    current = obj.get("status") or {}
    fields = tuple(fields)
    if unchanged(current, status, fields, conditions):
        return
    meta = obj["metadata"]
    try:
        await apply_status(
            kube,
            namespace=meta["namespace"],
            name=meta["name"],
            field_manager=field_manager,
            status=with_transition_times(current, status),
            resource=resource,
        )
    except errors.NotFoundError:
        return  # deleted meanwhile


async def still_there(kube: KubeClient, resource: Resource, obj: JSON) -> bool:
    """Whether the apiserver still holds `obj` (same uid) and is not deleting it.

    Asked only before a child is created. The view follows each kind on its own stream, so
    when a parent is deleted it may show a child going (the garbage collector's work) before
    it shows the parent gone; replacing that child would make a Workspace the garbage collector
    must find and delete again, GPU nodes and all.
    """
    meta = obj["metadata"]
    try:
        live = await kube.get(resource, meta["name"], namespace=meta["namespace"])
    except errors.NotFoundError:
        return False
    live_meta = live.get("metadata") or {}
    return live_meta.get("uid") == meta.get("uid") and not live_meta.get("deletionTimestamp")
