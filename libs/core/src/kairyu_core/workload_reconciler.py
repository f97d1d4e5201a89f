"""What the deployer and the tuner share: a Workspace's own workload, reconciled from the view.

Both make objects a Workspace controls (a Deployment or StatefulSet and its Service, a Job and its
ConfigMap) and turn them into the Workspace's conditions. One reconcile has the same shape in
both, and it lives here once:

- a Workspace gone from the view takes its objects with it (owner references): nothing to do;
- one being deleted has its workload stopped at once, but only once the apiserver confirms the
  deletion (the view alone must never stop a live workload);
- an apiserver error is a `TemporaryError`, retried with a growing delay;
- what is applied is checked against names other objects hold first, applied by server-side
  apply, and remembered until the view shows it (`Applied`), so a reconcile that runs before the
  watcher's news does not apply it again;
- a workload with no pod at all is explained by its controller's FailedCreate events;
- conditions are reported once per change, each transition an event on the reconcile's span.

A subclass says what to build and how to judge it (`_reconcile`) and what to stop (`_remove`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from opentelemetry import trace
from pydantic import ValidationError

from kairyu_contracts.api import Workspace, parse_workspace
from kairyu_contracts.catalog import Catalog, load_catalog
from kairyu_contracts.workloads import KnownChildren, Owner, refused_creation
from kairyu_core.bus import TemporaryError
from kairyu_core.kube import (
    GoingConfirmation,
    KubeClient,
    OnceDeleter,
    Report,
    Reported,
    applied_digest,
    apply_owned,
    check_free,
    errors,
    report_conditions,
    resources,
    stamped,
)
from kairyu_core.kube.resources import Resource
from kairyu_core.reconciling import Reconcile
from kairyu_core.rollout_trace import rollout_context
from kairyu_core.view import View

SETTLE_S = 10.0
"""How long an apply the view does not show yet is trusted (s): the watcher publishes it within
milliseconds; past this the objects are applied again."""
RETRY_S = 5.0
"""After an apiserver error, look again after this (growing per key while it lasts)."""


class ReconcilerSettings(Protocol):
    """What the base reads of a service's settings."""

    @property
    def service_name(self) -> str: ...  # the field manager of every apply and status write

    @property
    def namespace(self) -> str | None: ...  # only this namespace's Workspaces; all when None


S = TypeVar("S", bound=ReconcilerSettings)


@dataclass(frozen=True)
class Applied:
    """An apply the view may not show yet: for which Workspace uid, what digest, and when."""

    uid: str
    digest: str
    workload: dict[str, Any]
    at: float

    def settling_for(self) -> float:
        """Seconds it is still trusted over the view (0 or less: no longer)."""
        return SETTLE_S - (time.monotonic() - self.at)


class WorkloadReconciler(Generic[S]):
    """One reconcile per Workspace key, from the view; see the module docstring."""

    verb: ClassVar[str]
    """What it does, for messages: "deploy", "tune"."""
    kinds: ClassVar[Mapping[str, Resource]]
    """The kinds of object it applies and deletes."""
    tracer_name: ClassVar[str]
    """The instrumentation scope of its spans: "kairyu.deployer", "kairyu.tuner"."""

    def __init__(self, *, settings: S, kube: KubeClient, view: View, catalog: Catalog) -> None:
        self._settings = settings
        self._kube = kube
        self._view = view
        self._catalog = catalog
        self._children = KnownChildren()
        self._reported = Reported()
        self._applied: dict[str, Applied] = {}
        self._going = GoingConfirmation(kube)
        self._deleter = OnceDeleter(kube)  # uids deleted by this process, until the view agrees

    @classmethod
    def for_term(cls, settings: S, kube: KubeClient, view: View) -> Reconcile:
        """The reconcile of one term of leadership (`service.run_controller`'s `make`)."""
        return cls(settings=settings, kube=kube, view=view, catalog=load_catalog()).reconcile

    async def reconcile(self, key: str) -> float | None:
        """Bring the Workspace `namespace/name`'s objects and conditions in line with it.

        Returns seconds after which to look again, or None to wait for the next change.
        """
        raw = self._view.workspace(key)
        if raw is None:  # gone: owner references take its objects with it
            self._applied.pop(key, None)
            return None
        wanted = self._settings.namespace
        if wanted and raw["metadata"].get("namespace") != wanted:
            return None
        try:
            if raw["metadata"].get("deletionTimestamp"):
                # The view alone must not stop a live Workspace's workload: ask the apiserver.
                if await self._going.of(raw):
                    self._applied.pop(key, None)
                    await self._remove(key, raw)
                return None
            if not self._handles(raw):
                return None
            try:
                workspace = parse_workspace(raw)
            except ValidationError:  # the CRD admits only valid ones; an old object may not be
                return None
            return await self._reconcile(key, raw, workspace)
        except errors.KubeError as exc:  # not InvalidError: that one is a verdict
            raise TemporaryError(f"cannot {self.verb} {key}: {exc}", delay=RETRY_S) from exc

    def _handles(self, raw: dict[str, Any]) -> bool:
        """Whether a Workspace may be this service's, before parsing it (parsing costs)."""
        return True

    async def _reconcile(self, key: str, raw: dict[str, Any], workspace: Workspace) -> float | None:
        raise NotImplementedError

    async def _remove(self, key: str, raw: dict[str, Any]) -> None:
        """Stop what the Workspace being deleted runs (its nodes are draining)."""
        raise NotImplementedError

    def _rollout_span(
        self, name: str, key: str, workspace: Workspace, **attributes: str | int
    ) -> AbstractContextManager[trace.Span]:
        """A span of the Workspace's rollout trace (from its uid and generation)."""
        meta = workspace.metadata
        tagged: dict[str, str | int] = {
            "kairyu.workspace": key,
            "kairyu.generation": meta.generation or 0,
            **attributes,
        }
        return trace.get_tracer(self.tracer_name).start_as_current_span(
            name, context=rollout_context(meta.uid, meta.generation), attributes=tagged
        )

    @staticmethod
    def _stamp(built: list[dict[str, Any]]) -> str:
        """Stamp the workload (the last object) with the digest of them all; the digest.

        The view's workload then says what was applied, so an unchanged Workspace applies nothing.
        """
        digest = applied_digest(built)
        built[-1] = stamped(built[-1], digest)
        return digest

    async def _apply(self, owner: Owner, built: list[dict[str, Any]]) -> dict[str, Any]:
        """Apply every object (no name someone else's); the last as the apiserver returned it."""
        check_free(self._view, built, owner)
        applied: dict[str, Any] = {}
        for obj in built:
            applied = await apply_owned(
                self._kube,
                self.kinds[obj["kind"]],
                obj,
                owner=owner,
                children=self._children,
                field_manager=self._settings.service_name,
            )
        return applied

    def _remember(self, key: str, owner: Owner, digest: str, workload: dict[str, Any]) -> None:
        self._applied[key] = Applied(owner.uid, digest, workload, time.monotonic())

    def _settling(self, key: str, owner: Owner) -> tuple[Applied, float] | None:
        """The apply the view may not show yet, and for how many more seconds it is trusted.

        None when this Workspace instance has none, or it is no longer trusted.
        """
        pending = self._applied.get(key)
        if pending is None or pending.uid != owner.uid:
            return None
        left = pending.settling_for()
        return (pending, left) if left > 0 else None

    async def _delete(
        self, kind: str, obj: dict[str, Any], *, propagation: str | None = None
    ) -> None:
        await self._deleter(self.kinds[kind], obj, propagation=propagation)

    async def _delete_applied(
        self, owner: Owner, kind: str, name: str, *, propagation: str | None = None
    ) -> None:
        """Delete an object this process applied for `owner` (its uid known from the apply)."""
        uid = self._children.uid(owner, kind, name)
        if uid is not None:
            self._children.forget(owner, kind, name)
            meta = {"namespace": owner.namespace, "name": name, "uid": uid}
            await self._delete(kind, {"kind": kind, "metadata": meta}, propagation=propagation)

    async def _creation_refusal(self, namespace: str, uid: str) -> str | None:
        """Why a workload's controller could not create its pods, from its FailedCreate events.

        A controller says so only in an event; read it only for a workload without any pod.
        """
        events = await self._kube.request(
            "GET",
            resources.EVENTS.path(namespace=namespace),
            query={"fieldSelector": f"involvedObject.uid={uid},reason=FailedCreate"},
        )
        return refused_creation(list(events.get("items") or []))

    async def _report(
        self,
        raw: dict[str, Any],
        reports: list[Report],
        span: trace.Span,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Write the conditions (and status `fields`) if they differ from what was reported."""
        await report_conditions(
            self._kube,
            raw,
            reports,
            fields=fields,
            field_manager=self._settings.service_name,
            on_transition=lambda r: span.add_event(
                "condition", {"type": r.type, "status": r.status.value, "reason": r.reason}
            ),
            reported=self._reported,
        )
