"""The planner service: plans each Workspace generation and writes `Planned` and `status.plan`.

Level-triggered: every WorkspaceObserved (and every ReplanRequested) re-reads the live Workspace
and computes its plan again. When the result equals what is stored, nothing is written; the
PlanCreated event is published either way, and JetStream drops the repeat when the same plan of
the same generation was just sent (its message id holds the plan's digest, which is also stored
as `status.plan.digest`). A spec that cannot be planned gets `Planned=False` with the reason and
no event downstream. Malformed events never reach this code: the bus dead-letters them.

A ReplanRequested is a request, not a fact to copy: only SKUs the catalog knows (for the planner's
cloud) are excluded, and the reason is cut to a readable length without control characters before
it reaches `status.plan` and the condition, since anyone who can publish that event could
otherwise fill the status with what they like or exclude every SKU under invented names.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from opentelemetry import trace
from pydantic import ValidationError

from kairyu_core.api import (
    Condition,
    ConditionStatus,
    ConditionType,
    Plan,
    parse_workspace,
    set_condition,
)
from kairyu_core.bus import Bus, BusError, ConsumerSpec, Delivery, TemporaryError
from kairyu_core.catalog import Catalog
from kairyu_core.events import Event, PlanCreated, ReplanRequested, WorkspaceObserved, WorkspaceRef
from kairyu_core.kube import KubeClient, apply_status, errors, resources
from kairyu_planner.checked import plan_checked
from kairyu_planner.planning import PlanError, PlanReason
from kairyu_planner.settings import PlannerSettings, PlanningSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("kairyu.planner")

CONSUMED: dict[str, type[Event]] = {
    WorkspaceObserved.event_name: WorkspaceObserved,
    ReplanRequested.event_name: ReplanRequested,
}
_MAX_MESSAGE = 2048  # condition messages are shown by kubectl describe; keep them readable
MAX_REPLAN_REASON = 512  # a cloud's refusal fits; more is not a reason but a payload
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def known_skus(names: list[str], catalog: Catalog, planning: PlanningSettings) -> set[str]:
    """The names that are SKUs of the planner's cloud, spelled as the catalog spells them."""
    known: set[str] = set()
    for name in names:
        sku = catalog.sku(name)
        if sku is not None and sku.cloud == planning.cloud:
            known.add(sku.name)
    return known


def clean_reason(reason: str) -> str:
    """A refusal message fit for a condition: one line, at most MAX_REPLAN_REASON characters."""
    text = _CONTROL.sub(" ", reason).strip()
    return text if len(text) <= MAX_REPLAN_REASON else text[: MAX_REPLAN_REASON - 1] + "…"


def consumer_spec(settings: PlannerSettings, bus: Bus) -> ConsumerSpec:
    return ConsumerSpec.of_events(settings.service_name, CONSUMED.values(), bus.stream.subjects)


class Planner:
    """Handles the planner's events."""

    def __init__(
        self, *, settings: PlannerSettings, bus: Bus, kube: KubeClient, catalog: Catalog
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._kube = kube
        self._catalog = catalog

    async def handle(self, event: Event, delivery: Delivery) -> None:
        """The consumer's handler: plan the Workspace the event names."""
        if isinstance(event, WorkspaceObserved) and event.deleting:
            return  # the provisioner frees its nodes; there is nothing left to plan
        ref = event.workspace
        try:
            raw = await self._kube.get(resources.WORKSPACES, ref.name, namespace=ref.namespace)
        except errors.NotFoundError:
            return  # deleted since; WorkspaceDeleted follows
        except errors.KubeError as exc:
            raise TemporaryError(f"cannot read {ref.key}: {exc}") from exc
        if raw["metadata"].get("uid") != ref.uid:
            return  # a new Workspace with the same name; its own events will come
        with tracer.start_as_current_span(
            "plan", attributes={"kairyu.workspace": ref.key, "kairyu.generation": ref.generation}
        ) as span:
            await self._reconcile(raw, event, span)

    async def _reconcile(self, raw: dict[str, Any], event: Event, span: trace.Span) -> None:
        try:
            workspace = parse_workspace(raw)
        except ValidationError as exc:
            # Admitted by an older or newer CRD: explain instead of retrying forever.
            await self._refuse(
                raw, PlanReason.INVALID_SPEC, f"cannot read the Workspace: {exc}", span
            )
            return
        status = workspace.status
        stored = status.plan if status else None
        planning = self._settings.planning
        stored_exclude = stored.excluded_instance_types or [] if stored else []
        exclude = known_skus(stored_exclude, self._catalog, planning)
        replan_reason = None
        if stored and stored.replan_reason:
            replan_reason = clean_reason(stored.replan_reason)
        if isinstance(event, ReplanRequested):
            requested = known_skus(event.excluded_instance_types, self._catalog, planning)
            if requested:
                exclude |= requested
                replan_reason = clean_reason(event.reason)
                span.add_event("replan requested", {"kairyu.reason": replan_reason})
            else:
                log.warning(
                    "ignoring a re-plan request for %s: none of its SKUs is a %s SKU kairyu knows",
                    event.workspace.key,
                    planning.cloud.value,
                )
        try:
            result = plan_checked(
                workspace, self._catalog, self._settings.planning, frozenset(exclude)
            )
        except PlanError as exc:
            await self._refuse(raw, exc.reason, exc.message, span)
            return
        plan = result.plan
        message = plan.reason or ""
        if exclude and replan_reason:
            plan.replan_reason = replan_reason
            message = f"re-planned after: {replan_reason}; {message}"
        if result.warnings:
            message += "; warnings: " + "; ".join(result.warnings)
        # Stored with the plan: the provisioner names it beside the nodes it chose, and the
        # deployer and tuner run a plan only on nodes chosen for that digest (nodes_ready).
        plan.digest = digest = plan.content_digest()
        span.set_attributes(
            {
                "kairyu.plan.instance_type": plan.instance_type,
                "kairyu.plan.node_count": plan.node_count,
                "kairyu.plan.cost_per_hour": plan.estimated_cost_per_hour or "",
            }
        )
        await self._write(
            raw,
            plan=plan,
            status=ConditionStatus.TRUE,
            reason=PlanReason.PLAN_CREATED,
            message=message,
            span=span,
        )
        created = PlanCreated(
            workspace=WorkspaceRef.of(workspace),
            instance_type=plan.instance_type,
            node_count=plan.node_count,
            plan_digest=digest,
        )
        try:
            await self._bus.publish(created)
        except BusError as exc:
            raise TemporaryError(
                f"cannot publish the plan of {created.workspace.key}: {exc}"
            ) from exc

    async def _refuse(
        self, raw: dict[str, Any], reason: str, message: str, span: trace.Span
    ) -> None:
        span.set_status(trace.StatusCode.ERROR, f"{reason}: {message}"[:_MAX_MESSAGE])
        await self._write(
            raw, plan=None, status=ConditionStatus.FALSE, reason=reason, message=message, span=span
        )

    async def _write(
        self,
        raw: dict[str, Any],
        *,
        plan: Plan | None,
        status: ConditionStatus,
        reason: str,
        message: str,
        span: trace.Span,
    ) -> None:
        meta = raw["metadata"]
        live_status = raw.get("status") or {}
        conditions = list(live_status.get("conditions") or [])
        current = next((c for c in conditions if c.get("type") == ConditionType.PLANNED), None)
        generation = meta.get("generation")
        message = message[:_MAX_MESSAGE]
        stored_plan = live_status.get("plan")
        new_plan = plan.to_wire() if plan else None
        unchanged = (
            current is not None
            and (current.get("status"), current.get("reason"), current.get("message"))
            == (status.value, reason, message)
            and current.get("observedGeneration") == generation
            and stored_plan == new_plan
        )
        if unchanged:
            return
        condition = set_condition(
            [Condition.model_validate(c) for c in conditions],
            type=ConditionType.PLANNED,
            status=status,
            reason=reason,
            message=message,
            observed_generation=generation,
        )
        body: dict[str, Any] = {"conditions": [condition.to_wire()]}
        if plan is not None:
            body["plan"] = new_plan
            body["targetNodeCount"] = plan.node_count
        if current is None or current.get("status") != status.value:
            span.add_event(
                "condition", {"type": "Planned", "status": status.value, "reason": reason}
            )
        try:
            await apply_status(
                self._kube,
                namespace=meta["namespace"],
                name=meta["name"],
                field_manager=self._settings.service_name,
                status=body,
            )
        except errors.NotFoundError:
            return
        except errors.KubeError as exc:
            raise TemporaryError(f"cannot write the plan of {meta['name']}: {exc}") from exc
