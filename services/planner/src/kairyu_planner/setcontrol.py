"""The InferenceSet controller, in the planner: children and status from the view (thin I/O).

Why the planner and not a service of its own: a set's decisions are planning decisions (how many
replicas its node limit allows, what the whole set costs, both read from the children's plans),
and the planner's view already holds every Workspace. Its keys share the planner's work queue
as `InferenceSet/<namespace>/<name>`.

Each reconcile reads the set and its children from the view (kairyu_core.view `members`),
decides (kairyu_planner.inferencesets), creates the missing children (their names are
deterministic: an AlreadyExists means a view that does not show them yet), deletes the surplus
ones by uid, keeps the set's ScaledObject when it is annotated for autoscaling
(kairyu_planner.scalercontrol), and writes the status only when it differs from the view's.
Before it creates a child it asks the apiserver whether the set still exists (one GET per
scale-up): a view may show a deleted set's children going before it shows the set gone.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace

from kairyu_core.bus import TemporaryError
from kairyu_core.kube import KubeClient, OnceDeleter, errors, resources
from kairyu_core.rollout_trace import rollout_context, start_rollout
from kairyu_core.view import View
from kairyu_planner.autoscaling import CONDITION as AUTOSCALING_TYPE
from kairyu_planner.inferencesets import READY_TYPE, Decision, child_manifest, decide
from kairyu_planner.parentstatus import still_there, write_status
from kairyu_planner.scalercontrol import ScalerControl
from kairyu_planner.scalesteps import ScaleStep, SpanPlan, step_spans, utc_now
from kairyu_planner.settings import AutoscalingSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("kairyu.planner")
_RETRY_S = 2.0
_FOREIGN_RETRY_S = 0.1  # a replica's name was someone else's: try the next one soon
_FOREIGN_LIMIT = 10_000  # sets whose foreign names are remembered
_STEP_LIMIT = 10_000  # sets whose scale step in progress is remembered
_INVALID_REASON = "InvalidTemplate"
_OWNED = (
    "replicas",
    "readyReplicas",
    "selector",
    "nodeCount",
    "estimatedCostPerHour",
    "observedGeneration",
)
"""The status fields this controller writes besides its conditions (others' are left alone)."""
_CONDITIONS = (READY_TYPE, AUTOSCALING_TYPE)
"""The conditions it writes: one it leaves out is removed (server-side apply drops it)."""


class InferenceSetController:
    """Reconciles InferenceSets from the planner's view."""

    def __init__(
        self,
        *,
        kube: KubeClient,
        view: View,
        field_manager: str,
        autoscaling: AutoscalingSettings | None = None,
    ) -> None:
        self._kube = kube
        self._view = view
        self._field_manager = field_manager
        self._scaler = ScalerControl(
            kube=kube, settings=autoscaling or AutoscalingSettings(), field_manager=field_manager
        )
        self._deleter = OnceDeleter(kube)
        # set key → names Workspaces that are not its children hold (a 409 that is not ours)
        self._foreign: dict[str, set[str]] = {}
        self._steps: dict[str, ScaleStep] = {}  # set uid → its scale step in progress

    async def reconcile(self, key: str) -> float | None:
        inference_set = self._view.parent(key)
        if inference_set is None:
            self._foreign.pop(key, None)
            return None  # gone: its children go with it (owner references)
        foreign = frozenset(self._foreign.get(key, ()))
        members = self._view.members(key)
        decision = decide(inference_set, members, foreign)
        meta = inference_set["metadata"]
        step = self._step(key, inference_set, decision, members)
        again: float | None = None
        try:
            if decision.create and not await still_there(
                self._kube, resources.INFERENCESETS, inference_set
            ):
                return None  # being deleted: its children go, none is replaced
            for name in decision.create:
                try:
                    await self._kube.create(
                        resources.WORKSPACES,
                        child_manifest(inference_set, name),
                        namespace=meta["namespace"],
                        field_manager=self._field_manager,
                    )
                    log.info("%s: created Workspace %s", key, name)
                    if step is not None and name not in step.created:
                        step.created.append(name)
                except errors.ConflictError:
                    if await self._held_by_another(inference_set, name):
                        self._remember_foreign(key, name)
                        again = _FOREIGN_RETRY_S  # another name, at once
                    # else: made before; the view does not show it yet
                except errors.InvalidError as exc:
                    # The template is no valid Workspace (no webhook ran): say so on the set.
                    refused = decision.status["conditions"][0]
                    refused.update(
                        {
                            "status": "False",
                            "reason": _INVALID_REASON,
                            "message": f"a replica cannot be created: {exc}"[:1024],
                        }
                    )
                    break
            for child in decision.delete:
                await self._deleter(resources.WORKSPACES, child)
                log.info("%s: deleted Workspace %s", key, child["metadata"]["name"])
                if step is not None and child["metadata"]["name"] not in step.removed:
                    step.removed.append(child["metadata"]["name"])
            scaling, retry = await self._scaler.reconcile(inference_set)
            if scaling is not None:
                decision.status["conditions"].append(scaling)
            if retry is not None:
                again = retry if again is None else min(again, retry)
            await self._write(inference_set, decision.status)
        except errors.KubeError as exc:
            raise TemporaryError(f"cannot reconcile {key}: {exc}", delay=_RETRY_S) from exc
        return again

    def _step(
        self,
        key: str,
        inference_set: dict[str, Any],
        decision: Decision,
        members: list[dict[str, Any]],
    ) -> ScaleStep | None:
        """The set's scale step in progress, if any.

        It begins when children are to be added or removed, and is recorded as spans once every
        wanted replica is ready (kairyu_planner.scalesteps).
        """
        meta = inference_set["metadata"]
        uid, generation = str(meta.get("uid") or ""), int(meta.get("generation") or 0)
        step = self._steps.get(uid)
        if step is not None and step.generation != generation:
            self._record(step, members, superseded=True)  # scaled again before it was done
            del self._steps[uid]
            step = None
        if step is None and (decision.create or decision.delete):
            replicas = (inference_set.get("spec") or {}).get("replicas")
            step = ScaleStep(
                key=key.removeprefix("InferenceSet/"),
                uid=uid,
                generation=generation,
                started=utc_now(),
                before=int(decision.status.get("replicas") or 0) + len(decision.delete),
                wanted=int(replicas) if isinstance(replicas, int) else 1,
            )
            self._steps[uid] = step
            if len(self._steps) > _STEP_LIMIT:
                del self._steps[next(iter(self._steps))]
            return step
        done = decision.status["conditions"][0]["status"] == "True"
        if step is not None and done and not decision.create and not decision.delete:
            self._record(step, members)
            del self._steps[uid]
            return None
        return step

    def _record(
        self, step: ScaleStep, members: list[dict[str, Any]], *, superseded: bool = False
    ) -> None:
        namespace, _, name = step.key.partition("/")
        start_rollout(
            namespace=namespace,
            name=name,
            uid=step.uid,
            generation=step.generation,
            started=step.started,
            kind="InferenceSet",
        )
        plan = step_spans(step, members, now=utc_now(), superseded=superseded)
        _emit(plan, rollout_context(step.uid, step.generation))

    async def _held_by_another(self, inference_set: dict[str, Any], name: str) -> bool:
        """Whether the Workspace `name` exists and is not this set's (a create answered 409)."""
        meta = inference_set["metadata"]
        try:
            found = await self._kube.get(resources.WORKSPACES, name, namespace=meta["namespace"])
        except errors.NotFoundError:
            return False  # gone meanwhile: the next create makes it
        refs = (found.get("metadata") or {}).get("ownerReferences") or []
        return not any(r.get("controller") and r.get("uid") == meta.get("uid") for r in refs)

    def _remember_foreign(self, key: str, name: str) -> None:
        names = self._foreign.setdefault(key, set())
        names.add(name)
        if len(self._foreign) > _FOREIGN_LIMIT:
            del self._foreign[next(iter(self._foreign))]

    async def _write(self, inference_set: dict[str, Any], status: dict[str, Any]) -> None:
        await write_status(
            self._kube,
            resources.INFERENCESETS,
            inference_set,
            status,
            fields=_OWNED,
            field_manager=self._field_manager,
            conditions=_CONDITIONS,
        )


def _nanos(moment: Any) -> int:
    return int(moment.timestamp() * 1e9)


def _emit(plan: SpanPlan, context: Any) -> None:
    """Record `plan` and the spans beneath it, with their own times."""
    span = tracer.start_span(
        plan.name, context=context, start_time=_nanos(plan.start), attributes=plan.attributes
    )
    if plan.error is not None:
        span.set_status(trace.StatusCode.ERROR, plan.error)
    for child in plan.children:
        _emit(child, trace.set_span_in_context(span))
    span.end(end_time=_nanos(plan.end))
