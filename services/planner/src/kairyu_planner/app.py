"""The planner service: plans each Workspace generation and writes `Planned` and `status.plan`.

One `reconcile(key)` per Workspace, level-triggered, reading the Workspace from the service's view
(kairyu_core.view, fed over NATS), never from the apiserver. It computes the plan again and
writes `Planned`, `status.plan` and `status.targetNodeCount` only when they differ from what the
view's Workspace says; the status change is the hand-off (the provisioner sees it in its view).
`status.plan.digest` names the plan, so the provisioner and the deployer can tell its nodes and
workload from an earlier plan's. A spec that cannot be planned gets `Planned=False` with the
reason; a plan made for an earlier generation stays in the status (what still runs), and no
service acts on it for the new one.

Re-plans need no event: when the cloud refuses the plan's SKU, the provisioner writes
`status.replanRequest` (the plan's digest, the SKU, the cloud's message). It is a request, not a
fact to copy: the planner acts on it only while it names the current plan (its digest and
instance type), excludes the SKU only if the catalog knows it for the planner's cloud, and cuts
the reason to a readable length without control characters before it reaches `status.plan` and
the condition, since anyone who can write the status could otherwise fill it with what they like
or exclude every SKU under invented names. The new plan has another digest, so the request is
stale once answered.

The planner's first decision about a generation records the root span of its rollout trace,
whose ids every service derives from the Workspace's uid and generation (kairyu_core.rollout_trace).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from datetime import datetime
from http import HTTPStatus
from typing import Any

from opentelemetry import trace
from pydantic import ValidationError

from kairyu_contracts.api import (
    Condition,
    ConditionStatus,
    ConditionType,
    LabelSelector,
    Plan,
    ReplanRequest,
    Workspace,
    parse_workspace,
    set_condition,
)
from kairyu_contracts.catalog import Catalog, GpuSku
from kairyu_contracts.catalog.sizing import SizingError, is_hf_id
from kairyu_contracts.labels import API_KEY_ANNOTATION
from kairyu_contracts.objectstate import PARENT_KINDS, Kind
from kairyu_core import rollout_trace
from kairyu_core.bus import FOLLOWS, TemporaryError
from kairyu_core.kube import KubeClient, apply_workspace_status, errors, resources
from kairyu_core.rollout_trace import rollout_context
from kairyu_core.view import View
from kairyu_planner.byonodes import NodesUnusableError, byo_sku
from kairyu_planner.hub import HubModels, HubUnavailableError
from kairyu_planner.planning import PlanError, PlanReason
from kairyu_planner.rolecontrol import MultiRoleController
from kairyu_planner.setcontrol import InferenceSetController
from kairyu_planner.settings import PlannerSettings, PlanningSettings
from kairyu_planner.validated_plan import plan_checked

log = logging.getLogger(__name__)
tracer = trace.get_tracer("kairyu.planner")


_MAX_MESSAGE = 2048  # condition messages are shown by kubectl describe; keep them readable
MAX_REPLAN_REASON = 512  # a cloud's refusal fits; more is not a reason but a payload
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_STARTED_LIMIT = 10_000  # rollouts remembered; forgetting one risks a duplicate root span
_RETRY_S = 2.0  # an apiserver error: look again after this (growing per key while it lasts)
_HUB_RETRY_S = 30.0  # the Hub (or the token's Secret) could not be read: ask again after this
# Your own nodes (byo) do not match or lack GPU labels: look again after this. Node changes wake
# no Workspace (nodes carry no Workspace's label), so this is how a new node is noticed.
_NODES_RETRY_S = 10.0


def followed(planning: PlanningSettings) -> tuple[Kind, ...]:
    """The kinds the planner's view follows: Nodes only for byo plans, which alone read them.

    A cluster's nodes change often; the other modes would be woken by them for nothing.
    """
    return tuple(k for k in FOLLOWS["planner"] if k != "Node" or planning.byo)


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


def current_request(workspace: Workspace) -> ReplanRequest | None:
    """`status.replanRequest` if it is about the current plan (its digest and SKU), else None."""
    status = workspace.status
    if status is None or status.plan is None or status.replan_request is None:
        return None
    plan, request = status.plan, status.replan_request
    if plan.digest is None or request.plan_digest != plan.digest:
        return None  # about an earlier plan: answered already, or outdated by an edit
    if request.instance_type.lower() != plan.instance_type.lower():
        return None  # only the plan's own SKU can be refused for it
    return request


class Planner:
    """Reconciles each Workspace's plan from the view."""

    def __init__(
        self,
        *,
        settings: PlannerSettings,
        kube: KubeClient,
        view: View,
        catalog: Catalog,
        hub: HubModels | None = None,
    ) -> None:
        self._settings = settings
        self._kube = kube
        self._view = view
        self._catalog = catalog
        self._hub = hub or HubModels(settings.hub, image=catalog.base_image)
        self._parents: dict[str, InferenceSetController | MultiRoleController] = {
            "InferenceSet": InferenceSetController(
                kube=kube,
                view=view,
                field_manager=settings.service_name,
                autoscaling=settings.autoscaling,
            ),
            "MultiRoleInference": MultiRoleController(
                kube=kube, view=view, field_manager=settings.service_name
            ),
        }
        self._started: dict[tuple[str, int], None] = {}  # rollouts whose root span is recorded

    async def reconcile(self, key: str) -> float | None:
        """Plan the Workspace `namespace/name` and write the result if it differs from the view's.

        Returns seconds after which to look again, or None to wait for the next change.
        A parent's key (`InferenceSet/<namespace>/<name>`, `MultiRoleInference/…`) goes to its
        kind's controller.
        """
        for kind in PARENT_KINDS:
            if key.startswith(f"{kind}/"):
                return await self._parents[kind].reconcile(key)
        raw = self._view.workspace(key)
        if raw is None or raw["metadata"].get("deletionTimestamp"):
            return None  # gone, or going: the provisioner frees its nodes; nothing to plan
        meta = raw["metadata"]
        generation = meta.get("generation") or 0
        if self._planned_on_own_nodes(raw, generation):
            return None
        started = time.time_ns()
        again: float | None = None
        try:
            catalog = await self._catalog_for(raw)
            byo = self._byo_sku(raw)
            outcome = self._decide(raw, catalog, byo)
        except NodesUnusableError as exc:  # your own nodes do not (yet) say what they offer
            outcome = _Outcome(None, exc.reason, exc.message)
            again = _NODES_RETRY_S
        except ValidationError as exc:
            # Admitted by an older or newer CRD: explain instead of retrying forever.
            outcome = _Outcome(None, PlanReason.INVALID_SPEC, f"cannot read the Workspace: {exc}")
        except SizingError as exc:
            outcome = _Outcome(None, PlanReason.MODEL_UNREADABLE, str(exc))
        except (HubUnavailableError, errors.KubeError) as exc:
            outcome = _Outcome(None, PlanReason.HUB_UNAVAILABLE, f"{exc}; asking again")
            again = _HUB_RETRY_S
        if outcome.plan is None:
            # The last plan stays, for the generation it was made for: the nodes and workload
            # that run it stay (no service acts on a plan of another generation), its cost stays
            # visible, and a Hugging Face model stays pinned to the commit it was sized at.
            outcome.kept = (raw.get("status") or {}).get("plan")
        if outcome.unchanged_in(raw):
            return again
        with tracer.start_as_current_span(
            "plan",
            context=rollout_context(meta.get("uid"), generation),
            start_time=started,
            attributes={"kairyu.workspace": key, "kairyu.generation": generation},
        ) as span:
            try:
                await self._write(raw, outcome, span)
            except errors.KubeError as exc:
                message = f"cannot write the plan of {key}: {exc}"
                raise TemporaryError(message, delay=_RETRY_S) from exc
        return again

    async def _catalog_for(self, raw: dict[str, Any]) -> Catalog:
        """The catalog, with the Workspace's model added when it is a Hugging Face id.

        The model is sized at the commit its current plan names (stable while the id is
        unchanged: no re-plan because the repository moved on), else at the default branch.
        Only for a model not read yet is the Hub asked, and only then the Workspace's
        `modelAccessSecret` read for its token.
        """
        preset = (raw.get("inference") or {}).get("preset") or {}
        name = preset.get("name")
        if not isinstance(name, str) or self._catalog.preset(name) is not None:
            return self._catalog
        if not is_hf_id(name):
            return self._catalog  # planning says the preset is unknown
        plan = (raw.get("status") or {}).get("plan") or {}
        revision = "main"
        if str(plan.get("model") or "").lower() == name.lower() and plan.get("modelRevision"):
            revision = str(plan["modelRevision"])
        options = preset.get("presetOptions") or {}
        secret = options.get("modelAccessSecret")
        reader = f"{raw['metadata']['namespace']}/{secret}" if secret else ""
        found = self._hub.cached(name, revision, reader)
        if found is None:
            token = await self._token(raw, options)
            found = await self._hub.model(name, revision, token, reader)
        return self._catalog.with_preset(name, found.preset)

    async def _token(self, raw: dict[str, Any], options: dict[str, Any]) -> str | None:
        """HF_TOKEN of the Workspace's modelAccessSecret, for the Hub request only."""
        secret = options.get("modelAccessSecret")
        if not isinstance(secret, str) or not secret:
            return None
        try:
            found = await self._kube.get(
                resources.SECRETS, secret, namespace=raw["metadata"]["namespace"]
            )
        except errors.NotFoundError as exc:
            raise SizingError(f"modelAccessSecret {secret} does not exist") from exc
        except errors.KubeError as exc:
            if exc.status != HTTPStatus.FORBIDDEN:
                raise
            raise SizingError(
                f"the planner may not read modelAccessSecret {secret}, so it cannot read this "
                f"gated model from the Hub: an admin grants it `get` on secrets "
                f"(planner.rbac.rules, docs/security.md)"
            ) from exc
        encoded = (found.get("data") or {}).get("HF_TOKEN")
        if not isinstance(encoded, str):
            raise SizingError(f"modelAccessSecret {secret} has no HF_TOKEN")
        try:
            return base64.b64decode(encoded, validate=True).decode().strip()
        except (ValueError, UnicodeDecodeError) as exc:
            raise SizingError(f"HF_TOKEN of modelAccessSecret {secret} is not text") from exc

    def _planned_on_own_nodes(self, raw: dict[str, Any], generation: int) -> bool:
        """A byo Workspace planned for this generation: its plan stays while the spec does.

        Its nodes change under it (a node relabelled, replaced, its GPU labels briefly gone
        while GPU Feature Discovery restarts); sizing it again from them on every event would
        flip a serving Workspace to Planned=False, or rename its SKU, for nothing it asked.
        KAITO too looks at the nodes only when a Workspace is created.
        """
        if not self._settings.planning.byo or (raw.get("resource") or {}).get("instanceType"):
            return False
        status = raw.get("status") or {}
        planned: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == ConditionType.PLANNED),
            {},
        )
        return (
            planned.get("status") == "True"
            and planned.get("observedGeneration") == generation
            and (status.get("plan") or {}).get("observedGeneration") == generation
        )

    def _byo_sku(self, raw: dict[str, Any]) -> GpuSku | None:
        """What the user's nodes matching the Workspace's selector offer, if planned for them.

        Only in byo mode for a Workspace that names no instance type; PlanError when no usable
        nodes match.
        """
        resource = raw.get("resource") or {}
        if not self._settings.planning.byo or resource.get("instanceType"):
            return None
        selector = LabelSelector.model_validate(resource.get("labelSelector") or {})
        return byo_sku(self._view.all("Node"), selector, self._settings.planning.cloud)

    def _decide(self, raw: dict[str, Any], catalog: Catalog, byo: GpuSku | None) -> _Outcome:
        """What `Planned` and `status.plan` should say for the Workspace `raw` (pure)."""
        workspace = parse_workspace(raw)
        status = workspace.status
        stored = status.plan if status else None
        planning = self._settings.planning
        stored_exclude = stored.excluded_instance_types or [] if stored else []
        exclude = known_skus(stored_exclude, catalog, planning)
        replan_reason = None
        if stored and stored.replan_reason:
            replan_reason = clean_reason(stored.replan_reason)
        request = current_request(workspace)
        requested: set[str] = set()
        if request is not None:
            requested = known_skus([request.instance_type], catalog, planning) - exclude
            if not requested and request.instance_type not in exclude:
                log.warning(
                    "ignoring a re-plan request for %s/%s: %s is no %s SKU kairyu knows",
                    workspace.metadata.namespace,
                    workspace.metadata.name,
                    request.instance_type[:128],
                    planning.cloud.value,
                )
        try:
            if request is not None and requested:
                try:
                    result = plan_checked(
                        workspace, catalog, planning, frozenset(exclude | requested), byo
                    )
                except PlanError as exc:
                    # Nothing else fits: keep the current plan (its SKU may be had later; the
                    # provisioner retries it) and say why, rather than drop the plan and, with
                    # it, the refused SKUs it remembers.
                    result = plan_checked(workspace, catalog, planning, frozenset(exclude), byo)
                    note = (
                        f"the cloud refused {request.instance_type} "
                        f"({clean_reason(request.reason)}), and no other SKU fits: {exc.message}"
                    )
                    result.warnings.insert(0, note)
                else:
                    exclude |= requested
                    replan_reason = clean_reason(request.reason)
            else:
                result = plan_checked(workspace, catalog, planning, frozenset(exclude), byo)
        except PlanError as exc:
            return _Outcome(None, exc.reason, exc.message)
        plan = result.plan
        message = plan.reason or ""
        if exclude and replan_reason:
            plan.replan_reason = replan_reason
            message = f"re-planned after: {replan_reason}; {message}"
        if result.warnings:
            message += "; warnings: " + "; ".join(result.warnings)
        # Stored with the plan: the provisioner names it beside the nodes it chose, and the
        # deployer and tuner run a plan only on nodes chosen for that digest (nodes_ready).
        plan.workload_digest = workload_digest(raw)
        plan.digest = plan.content_digest()
        return _Outcome(plan, PlanReason.PLAN_CREATED, message)

    async def _write(self, raw: dict[str, Any], outcome: _Outcome, span: trace.Span) -> None:
        meta = raw["metadata"]
        live_status = raw.get("status") or {}
        conditions = list(live_status.get("conditions") or [])
        current = next((c for c in conditions if c.get("type") == ConditionType.PLANNED), None)
        status = outcome.status
        plan = outcome.plan
        if plan is not None:
            span.set_attributes(
                {
                    "kairyu.plan.instance_type": plan.instance_type,
                    "kairyu.plan.node_count": plan.node_count,
                    "kairyu.plan.cost_per_hour": plan.estimated_cost_per_hour or "",
                }
            )
        else:
            span.set_status(
                trace.StatusCode.ERROR, f"{outcome.reason}: {outcome.message}"[:_MAX_MESSAGE]
            )
        condition = set_condition(
            [Condition.model_validate(c) for c in conditions],
            type=ConditionType.PLANNED,
            status=status,
            reason=outcome.reason,
            message=outcome.message,
            observed_generation=meta.get("generation"),
        )
        body: dict[str, Any] = {"conditions": [condition.to_wire()]}
        if plan is not None:
            body["plan"] = plan.to_wire()
            body["targetNodeCount"] = plan.node_count
        elif outcome.kept is not None:
            body["plan"] = outcome.kept
            if live_status.get("targetNodeCount") is not None:
                body["targetNodeCount"] = live_status["targetNodeCount"]
        if current is None or current.get("status") != status.value:
            span.add_event(
                "condition",
                {"type": "Planned", "status": status.value, "reason": outcome.reason},
            )
        generation = meta.get("generation") or 0
        rollout = (str(meta.get("uid") or ""), generation)
        first = current is None or current.get("observedGeneration") != generation
        if first and rollout not in self._started:
            # The first decision about this generation starts its rollout trace (once: a retry,
            # or a view that does not show this write yet, finds it started).
            self._started[rollout] = None
            if len(self._started) > _STARTED_LIMIT:
                del self._started[next(iter(self._started))]
            created = meta.get("creationTimestamp") if generation == 1 else None
            rollout_trace.start_rollout(
                namespace=meta["namespace"],
                name=meta["name"],
                uid=str(meta.get("uid") or ""),
                generation=generation,
                started=datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
            )
        try:
            await apply_workspace_status(
                self._kube, live=raw, status=body, field_manager=self._settings.service_name
            )
        except errors.NotFoundError:
            return


_WORKLOAD_INPUTS = ("adapters", "config", "template")
_WORKLOAD_ANNOTATIONS = (API_KEY_ANNOTATION,)


def workload_digest(raw: dict[str, Any]) -> str | None:
    """A hash of the inference inputs besides the plan that shape the pods, if any are set."""
    inference = raw.get("inference") or {}
    annotations = (raw.get("metadata") or {}).get("annotations") or {}
    inputs = {k: inference[k] for k in _WORKLOAD_INPUTS if inference.get(k)}
    inputs |= {k: annotations[k] for k in _WORKLOAD_ANNOTATIONS if annotations.get(k)}
    if not inputs:
        return None
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Outcome:
    """What the planner decided for one Workspace: a plan, or a refusal (plan None)."""

    def __init__(self, plan: Plan | None, reason: str, message: str) -> None:
        self.plan = plan
        self.reason = reason
        self.message = message[:_MAX_MESSAGE]
        self.kept: dict[str, Any] | None = None
        """A refusal's: the plan already in the status, written back unchanged."""

    @property
    def status(self) -> ConditionStatus:
        return ConditionStatus.TRUE if self.plan is not None else ConditionStatus.FALSE

    def unchanged_in(self, raw: dict[str, Any]) -> bool:
        """Whether the Workspace `raw` already says exactly this (so nothing is written)."""
        live_status = raw.get("status") or {}
        conditions = live_status.get("conditions") or []
        current = next((c for c in conditions if c.get("type") == ConditionType.PLANNED), None)
        new_plan = self.plan.to_wire() if self.plan is not None else self.kept
        return (
            current is not None
            and (current.get("status"), current.get("reason"), current.get("message"))
            == (self.status.value, self.reason, self.message)
            and current.get("observedGeneration") == raw["metadata"].get("generation")
            and live_status.get("plan") == new_plan
        )
