"""The MultiRoleInference controller, in the planner: its two InferenceSets and its status.

In the planner for the reason the InferenceSet controller is (kairyu_planner.setcontrol): its
decisions read objects the planner's view already holds (the role sets, and through them the
Workspaces' plans), and its keys (`MultiRoleInference/<namespace>/<name>`) share the planner's
work queue. Each reconcile reads the parent and its sets from the view, decides
(kairyu_planner.multiroles), and then:

- creates a set the view does not show (a POST: an AlreadyExists means a set the view does not
  show yet, the parent's or a stranger's, so it looks again rather than write over it);
- server-side applies its own set again when it differs, with the set's uid as a precondition,
  so a set replaced meanwhile (deleted, and created by someone else) is refused, not taken over;
- deletes a set of a role it no longer has, and writes the status when it changed.
"""

from __future__ import annotations

import logging

from kairyu_contracts.api.multiroleinference import ROLES
from kairyu_contracts.objectstate import ObjectKey
from kairyu_core.bus import TemporaryError
from kairyu_core.kube import KubeClient, OnceDeleter, errors, resources
from kairyu_core.view import View
from kairyu_planner.multiroles import decide_roles, failed, set_name
from kairyu_planner.parentstatus import still_there, write_status

log = logging.getLogger(__name__)
_RETRY_S = 2.0
_TAKEN_RETRY_S = 10.0
"""While a role's name is held by a set the parent does not control: a stranger's set carries no
label of the parent, so its removal wakes nothing; the parent looks again after this."""
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
        decision = decide_roles(parent, self._view.members(key), others)
        status = decision.status
        again = _TAKEN_RETRY_S if decision.taken else None
        try:
            if decision.create and not await still_there(
                self._kube, resources.MULTIROLEINFERENCES, parent
            ):
                return None  # being deleted: its sets go, none is made again
            writes = [(c, True) for c in decision.create] + [(c, False) for c in decision.update]
            for child, new in writes:
                name = child["metadata"]["name"]
                try:
                    if new:
                        await self._kube.create(
                            resources.INFERENCESETS,
                            child,
                            namespace=meta["namespace"],
                            field_manager=self._field_manager,
                        )
                    else:
                        await self._kube.apply(
                            resources.INFERENCESETS, child, field_manager=self._field_manager
                        )
                except errors.ConflictError:
                    again = _RETRY_S  # a set the view does not show yet, or one replaced
                    continue
                except errors.InvalidError as exc:
                    status = failed(status, name, str(exc))  # no webhook ran: say so
                    break
                log.info("%s: wrote InferenceSet %s", key, name)
            for child in decision.delete:
                await self._deleter(resources.INFERENCESETS, child)
                log.info("%s: deleted InferenceSet %s", key, child["metadata"]["name"])
            await write_status(
                self._kube,
                resources.MULTIROLEINFERENCES,
                parent,
                status,
                fields=_OWNED,
                field_manager=self._field_manager,
            )
        except errors.KubeError as exc:
            raise TemporaryError(f"cannot reconcile {key}: {exc}", delay=_RETRY_S) from exc
        return again
