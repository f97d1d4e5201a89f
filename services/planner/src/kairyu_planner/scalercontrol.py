"""Keeps an annotated InferenceSet's ScaledObject (thin I/O; what it holds: .autoscaling).

Called by the InferenceSet controller on every reconcile of a set. The planner does not follow
ScaledObjects: it applies one when what it wants differs from what this process last applied
(one apply per set after a restart, none for a status change of the set), and its condition on
the set (`AutoscalingReady`) is the record that kairyu made one, so that removing the
annotations deletes it even after a restart. A ScaledObject of that name that is not the set's
is never written (`ScaledObjectTaken`); a cluster without KEDA gets `KedaUnavailable`, and one
whose KEDA refuses it (its webhook: a target another ScaledObject or HPA scales) gets
`ScaledObjectRefused`; both are tried again every minute.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from kairyu_core.kube import KubeClient, errors, resources
from kairyu_planner.autoscaling import (
    APPLIED,
    CONDITION,
    INVALID,
    MANAGED_BY,
    MANAGER,
    REFUSED,
    TAKEN,
    UNAVAILABLE,
    AutoscalingError,
    condition,
    scaled_object,
    scaling_of,
    wanted,
)
from kairyu_planner.settings import AutoscalingSettings

JSON = dict[str, Any]
log = logging.getLogger(__name__)
_AGAIN_S = 60.0
_LIMIT = 10_000  # sets whose last applied ScaledObject is remembered


class ScalerControl:
    """The ScaledObject half of the InferenceSet controller."""

    def __init__(
        self, *, kube: KubeClient, settings: AutoscalingSettings, field_manager: str
    ) -> None:
        self._kube = kube
        self._settings = settings
        self._field_manager = field_manager
        self._applied: dict[str, str] = {}  # set uid → digest of the ScaledObject applied

    async def reconcile(self, inference_set: JSON) -> tuple[JSON | None, float | None]:
        """Apply or delete the set's ScaledObject: its condition (None: none) and when to retry."""
        meta = inference_set["metadata"]
        uid = str(meta.get("uid") or "")
        generation = meta.get("generation")
        annotations = meta.get("annotations") or {}
        if meta.get("deletionTimestamp"):
            return None, None  # the garbage collector takes its ScaledObject
        if not wanted(annotations):
            if _had_condition(inference_set):
                await self._delete(inference_set)
            self._applied.pop(uid, None)
            return None, None
        try:
            scaling = scaling_of(annotations, replica_limit=self._settings.max_replicas)
        except AutoscalingError as exc:
            if _had_condition(inference_set):
                await self._delete(inference_set)  # no stale ScaledObject scales it meanwhile
            self._applied.pop(uid, None)
            return condition(False, INVALID, str(exc), generation), None
        body = scaled_object(inference_set, scaling, activator_url=self._settings.activator_url)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if self._applied.get(uid) != digest:
            try:
                await self._kube.apply(
                    resources.SCALEDOBJECTS, body, field_manager=self._field_manager, force=False
                )
            except errors.NotFoundError:
                message = (
                    "KEDA is not installed: the cluster serves no keda.sh/v1alpha1 ScaledObject"
                )
                return condition(False, UNAVAILABLE, message, generation), _AGAIN_S
            except errors.ConflictError:
                message = (
                    f"ScaledObject {meta['name']} exists and is not this set's; it is left alone"
                )
                return condition(False, TAKEN, message, generation), _AGAIN_S
            except errors.KubeError as exc:
                if exc.status is None or not 400 <= exc.status < 500:  # noqa: PLR2004
                    raise  # the apiserver's trouble: retried with backoff
                # Refused (KEDA's webhook: a target another ScaledObject or HPA scales, ...).
                message = f"ScaledObject {meta['name']} was refused: {exc}"
                return condition(False, REFUSED, message, generation), _AGAIN_S
            self._applied[uid] = digest
            if len(self._applied) > _LIMIT:
                del self._applied[next(iter(self._applied))]
            log.info(
                "%s/%s: applied its ScaledObject (%s)",
                meta["namespace"],
                meta["name"],
                scaling.describe(),
            )
        message = f"ScaledObject {meta['name']} scales {scaling.describe()}"
        return condition(True, APPLIED, message, generation), None

    async def _delete(self, inference_set: JSON) -> None:
        """Delete the set's ScaledObject if kairyu made it for this set (by uid precondition)."""
        meta = inference_set["metadata"]
        try:
            found = await self._kube.get(
                resources.SCALEDOBJECTS, meta["name"], namespace=meta["namespace"]
            )
        except errors.NotFoundError:
            return
        found_meta = found.get("metadata") or {}
        ours = (found_meta.get("annotations") or {}).get(MANAGED_BY) == MANAGER and any(
            r.get("controller") and r.get("uid") == meta.get("uid")
            for r in found_meta.get("ownerReferences") or []
        )
        if not ours:
            return
        body = {"preconditions": {"uid": found_meta["uid"]}}
        try:
            await self._kube.request(
                "DELETE",
                resources.SCALEDOBJECTS.path(namespace=meta["namespace"], name=meta["name"]),
                body=body,
            )
        except (errors.NotFoundError, errors.ConflictError):
            return
        log.info(
            "%s/%s: deleted its ScaledObject (not annotated any more)",
            meta["namespace"],
            meta["name"],
        )


def _had_condition(inference_set: JSON) -> bool:
    conditions = (inference_set.get("status") or {}).get("conditions") or []
    return any(c.get("type") == CONDITION for c in conditions)
