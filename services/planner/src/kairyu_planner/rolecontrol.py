"""The MultiRoleInference controller, in the planner: its two InferenceSets and its status.

In the planner for the reason the InferenceSet controller is (kairyu_planner.setcontrol): its
decisions read objects the planner's view already holds (the role sets, and through them the
Workspaces' plans), and its keys (`MultiRoleInference/<namespace>/<name>`) share the planner's
work queue. Each reconcile reads the parent and its sets from the view, decides
(kairyu_planner.multiroles), server-side applies a set whose digest differs from what it last
applied, deletes a set of a role it no longer has, and writes the status when it changed.
"""

from __future__ import annotations

import logging

from kairyu_core.api.multiroleinference import ROLES
from kairyu_core.bus import TemporaryError
from kairyu_core.kube import KubeClient, OnceDeleter, errors, resources
from kairyu_core.objectstate import ObjectKey
from kairyu_core.view import View
from kairyu_planner.multiroles import READY, decide, set_name
from kairyu_planner.parentstatus import write_status

log = logging.getLogger(__name__)
_RETRY_S = 2.0
_OWNED = ("observedGeneration", "nodeCount", "estimatedCostPerHour")


class MultiRoleController:
    """Reconciles MultiRoleInferences from the planner's view."""

    def __init__(self, *, kube: KubeClient, view: View, field_manager: str) -> None:
        self._kube = kube
        self._view = view
        self._field_manager = field_manager
        self._deleter = OnceDeleter(kube)

    async def reconcile(self, key: str) -> float | None:
        parent = self._view.parent(key)
        if parent is None:
            return None  # gone: its sets go with it (owner references)
        meta = parent["metadata"]
        others = {}
        for role in ROLES:
            name = set_name(meta["name"], role)
            held = self._view.get(ObjectKey("InferenceSet", meta["namespace"], name))
            if held is not None:
                others[name] = held
        decision = decide(parent, self._view.members(key), others)
        try:
            for child in decision.apply:
                try:
                    # Forced, as KAITO's CreateOrUpdate: a role's replicas win over a
                    # `kubectl scale` of its set (a role without replicas leaves them alone).
                    # Never a stranger's set: decide() applies only to absent or own ones.
                    await self._kube.apply(
                        resources.INFERENCESETS, child, field_manager=self._field_manager
                    )
                except errors.InvalidError as exc:
                    # The parent makes no valid InferenceSet (no webhook ran): say so.
                    ready = next(c for c in decision.status["conditions"] if c["type"] == READY)
                    ready.update(
                        {
                            "reason": "ReconcileFailed",
                            "message": (f"Failed to reconcile {child['metadata']['name']}: {exc}")[
                                :1024
                            ],
                        }
                    )
                    break
                log.info("%s: applied InferenceSet %s", key, child["metadata"]["name"])
            for child in decision.delete:
                await self._deleter(resources.INFERENCESETS, child)
                log.info("%s: deleted InferenceSet %s", key, child["metadata"]["name"])
            await write_status(
                self._kube,
                resources.MULTIROLEINFERENCES,
                parent,
                decision.status,
                fields=_OWNED,
                field_manager=self._field_manager,
            )
        except errors.KubeError as exc:
            raise TemporaryError(f"cannot reconcile {key}: {exc}", delay=_RETRY_S) from exc
        return None
