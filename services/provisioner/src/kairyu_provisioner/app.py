"""The provisioner service: makes the plan's GPU nodes exist and reports when they are Ready.

Level-triggered. Every trigger (a new plan, a change of the Workspace, a labelled Node or
NodeClaim changing, the periodic check) re-reads the Workspace and compares the nodes it has with
the nodes its plan needs; backends create what is missing under deterministic names, so a repeat
or a restart asks for the same objects again. It owns `ResourceReady`, `NodesReady`,
`WorkspaceDeleting`, `status.workerNodes` and `status.workerNodesPlanDigest` (the plan those
nodes were chosen for), publishes NodesReady, and, when the cloud refuses a
SKU for quota or capacity, asks the planner for another (ReplanRequested) up to `max_replans`.
A finalizer keeps a Workspace until its NodeClaims / agent pools and their nodes are gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError
from opentelemetry import trace
from pydantic import ValidationError

from kairyu_core.api import (
    Condition,
    ConditionStatus,
    ConditionType,
    Workspace,
    parse_workspace,
    set_condition,
)
from kairyu_core.bus import Bus, BusError, ConsumerSpec, Delivery, TemporaryError
from kairyu_core.catalog import Catalog
from kairyu_core.events import (
    Event,
    NodesReady,
    ObjectChanged,
    PlanCreated,
    ReplanRequested,
    WorkspaceDeleted,
    WorkspaceObserved,
    WorkspaceRef,
)
from kairyu_core.kube import KubeClient, apply_status, errors, events, resources
from kairyu_core.tracing import rollout_context
from kairyu_provisioner import naming
from kairyu_provisioner.backends import Backend, Owned, Progress
from kairyu_provisioner.failures import CloudFailure
from kairyu_provisioner.readiness import Selection, select
from kairyu_provisioner.settings import ProvisionerSettings
from kairyu_provisioner.target import Target, target_of

log = logging.getLogger(__name__)
tracer = trace.get_tracer("kairyu.provisioner")

CONSUMED: dict[str, type[Event]] = {
    e.event_name: e for e in (PlanCreated, WorkspaceObserved, ObjectChanged, WorkspaceDeleted)
}
_NODE_KINDS = {"Node", "NodeClaim"}
_MAX_MESSAGE = 2048


def consumer_spec(settings: ProvisionerSettings, bus: Bus) -> ConsumerSpec:
    return ConsumerSpec.of_events(settings.service_name, CONSUMED.values(), bus.stream.subjects)


class Provisioner:
    """Handles the provisioner's events and its periodic check."""

    def __init__(
        self,
        *,
        settings: ProvisionerSettings,
        bus: Bus,
        kube: KubeClient,
        catalog: Catalog,
        backend: Backend,
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._kube = kube
        self._catalog = catalog
        self._backend = backend
        # The consumer runs one Workspace's messages in order; the periodic check must not run
        # beside them, so both take this lock.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # uid → (SKU the cloud refused, monotonic time before which it is not asked again)
        self._held: dict[str, tuple[str, float]] = {}

    # ------------------------------------------------------------------ triggers
    async def handle(self, event: Event, delivery: Delivery) -> None:
        """The consumer's handler."""
        ref = event.workspace
        if isinstance(event, ObjectChanged) and event.kind not in _NODE_KINDS:
            return  # workloads and pods are the deployer's and tuner's business
        try:
            if isinstance(event, WorkspaceDeleted):
                await self._collect(ref)
                return
            await self.check(ref.namespace, ref.name, uid=ref.uid, full=False)
        except (errors.KubeError, AzureError) as exc:
            raise TemporaryError(f"cannot provision {ref.key}: {exc}", delay=5.0) from exc

    async def run_periodic(self) -> None:
        """Collect orphans at start-up, then re-check waiting Workspaces every interval."""
        while True:
            try:
                await self.collect_orphans()
                await self.check_waiting()
            except (errors.KubeError, AzureError) as exc:
                log.warning("periodic check failed, trying again later: %s", exc)
            except Exception:  # a bug or odd data must not stop the checks for everyone
                log.exception("periodic check failed, trying again later")
            await asyncio.sleep(self._settings.provisioning.check_interval_s)

    async def check_waiting(self) -> None:
        """Check every Workspace whose nodes are not settled (timeouts, BYO nodes, deletions)."""
        listed = await self._kube.list(resources.WORKSPACES, namespace=self._settings.namespace)
        for item in listed.get("items") or []:
            meta = item["metadata"]
            if _settled(item) and not meta.get("deletionTimestamp"):
                continue
            try:
                await self.check(meta["namespace"], meta["name"], uid=meta.get("uid"), full=True)
            except (errors.KubeError, AzureError) as exc:
                log.warning("check of %s/%s failed: %s", meta["namespace"], meta["name"], exc)
            except Exception:  # one Workspace's trouble must not skip the others
                log.exception("check of %s/%s failed", meta["namespace"], meta["name"])

    # ------------------------------------------------------------------ one Workspace
    async def check(self, namespace: str, name: str, *, uid: str | None, full: bool) -> None:
        async with self._locks[f"{namespace}/{name}"]:
            try:
                raw = await self._kube.get(resources.WORKSPACES, name, namespace=namespace)
            except errors.NotFoundError:
                return
            if uid is not None and raw["metadata"].get("uid") != uid:
                return  # a new Workspace of the same name; its own events follow
            try:
                workspace = parse_workspace(raw)
            except ValidationError:
                return  # the planner explains unreadable Workspaces in Planned
            meta = workspace.metadata
            deleting = meta.deletion_timestamp is not None
            target = None if deleting else target_of(workspace, self._catalog)
            if not deleting and target is None:
                return  # not planned (yet) for this generation
            if deleting and naming.FINALIZER not in (meta.finalizers or []):
                return  # nothing of ours to free
            with tracer.start_as_current_span(
                "provision",
                # The rollout's trace, whichever event or timer led here (design.md).
                context=rollout_context(meta.annotations),
                attributes={
                    "kairyu.workspace": f"{namespace}/{name}",
                    "kairyu.generation": meta.generation or 0,
                    "kairyu.provisioner.backend": self._backend.name,
                },
            ) as span:
                if target is None:
                    await self._release(raw, workspace, span)
                    return
                span.set_attributes(
                    {
                        "kairyu.plan.instance_type": target.instance_type,
                        "kairyu.plan.node_count": target.node_count,
                    }
                )
                if target.node_count > self._settings.provisioning.max_nodes:
                    await self._over_limit(raw, target, span)
                    return
                if not full and _settled(raw):
                    selection = await self._select(target)
                    if selection.complete and selection.nodes == list(target.current_nodes):
                        return  # still as reported: nothing to do, nothing to write
                await self._provision(raw, workspace, target, span)

    async def _provision(
        self, raw: dict[str, Any], workspace: Workspace, target: Target, span: trace.Span
    ) -> None:
        if self._backend.creates_nodes:
            await self._add_finalizer(raw)
        if self._on_hold(target):
            return  # refused: wait for a new plan, or for the retry interval to pass
        progress = await self._backend.ensure(target)
        if progress.failure is not None:
            await self._refused(raw, workspace, target, progress.failure, span)
            return
        selection = await self._select(target)
        if selection.complete:
            await self._ready(raw, workspace, target, selection, span)
        else:
            await self._waiting(raw, target, selection, progress, span)

    async def _over_limit(self, raw: dict[str, Any], target: Target, span: trace.Span) -> None:
        # The planner never writes such a plan; a status written by hand (or by a planner with a
        # higher limit) must not turn into GPU nodes. Nothing is created or removed.
        limit = self._settings.provisioning.max_nodes
        message = (
            f"the plan asks for {target.node_count} {target.instance_type} nodes, more than the "
            f"provisioner's limit of {limit} per Workspace (KAIRYU_PROVISIONING__MAX_NODES); "
            f"nothing is provisioned"
        )
        span.set_status(trace.StatusCode.ERROR, f"PlanOverNodeLimit: {message}")
        await self._write(raw, span, ready=(ConditionStatus.FALSE, "PlanOverNodeLimit", message))

    def _on_hold(self, target: Target) -> bool:
        held = self._held.get(target.uid)
        if held is None:
            return False
        sku, until = held
        if sku == target.instance_type.lower() and time.monotonic() < until:
            return True
        del self._held[target.uid]
        return False

    async def _select(self, target: Target) -> Selection:
        listed = await self._kube.list(
            resources.NODES, label_selector=self._backend.node_selector(target)
        )
        return select(
            listed.get("items") or [],
            count=target.node_count,
            instance_type=target.instance_type,
            preferred=target.preferred_nodes,
            current=target.current_nodes,
            selector=target.selector if not self._backend.creates_nodes else None,
        )

    async def _ready(
        self,
        raw: dict[str, Any],
        workspace: Workspace,
        target: Target,
        selection: Selection,
        span: trace.Span,
    ) -> None:
        message = f"{len(selection.nodes)} {target.instance_type} node(s) Ready with GPUs"
        current = _condition(raw, ConditionType.RESOURCE_READY)
        if current is None or current.get("status") != ConditionStatus.TRUE.value:
            await self._trace_node_waits(workspace, target, selection.nodes)
        await self._write(
            raw,
            span,
            ready=(ConditionStatus.TRUE, "NodesReady", message),
            nodes=(selection.nodes, target.plan_digest),
        )
        span.set_attribute("kairyu.nodes", selection.nodes)
        try:
            await self._bus.publish(
                NodesReady(
                    workspace=WorkspaceRef.of(workspace),
                    instance_type=target.instance_type,
                    node_names=selection.nodes,
                )
            )
        except BusError as exc:
            raise TemporaryError(f"cannot announce the nodes of {target.key}: {exc}") from exc

    async def _trace_node_waits(
        self, workspace: Workspace, target: Target, names: list[str]
    ) -> None:
        """One span per node of the rollout, from its creation to Ready: the wait for capacity.

        Recorded once the nodes are Ready, with their own timestamps, because the wait happened
        across many checks (and maybe provisioner restarts) that each saw only part of it.
        """
        listed = await self._kube.list(
            resources.NODES, label_selector=self._backend.node_selector(target)
        )
        rollout = rollout_context(workspace.metadata.annotations)
        for node in listed.get("items") or []:
            meta = node["metadata"]
            if meta["name"] not in names:
                continue
            ready = next(
                (
                    c.get("lastTransitionTime")
                    for c in (node.get("status") or {}).get("conditions") or []
                    if c.get("type") == "Ready"
                ),
                None,
            )
            created = _nanos(meta.get("creationTimestamp"))
            span = tracer.start_span(
                f"node {meta['name']}",
                context=rollout,
                start_time=created,
                attributes={
                    "kairyu.workspace": target.key,
                    "k8s.node.name": meta["name"],
                    "kairyu.plan.instance_type": target.instance_type,
                    "kairyu.provisioner.backend": self._backend.name,
                },
            )
            span.end(end_time=max(_nanos(ready) or created or 0, created or 0) or None)

    async def _waiting(
        self,
        raw: dict[str, Any],
        target: Target,
        selection: Selection,
        progress: Progress,
        span: trace.Span,
    ) -> None:
        detail = "; ".join([selection.summary(), *progress.waiting])
        if not self._backend.creates_nodes:
            selector = self._backend.node_selector(target) or "any labels"
            message = (
                f"not enough existing nodes: need {target.node_count} Ready "
                f"{target.instance_type} node(s) with GPUs matching {selector}; {detail}"
            )
            await self._write(raw, span, ready=(ConditionStatus.FALSE, "NotEnoughNodes", message))
            return
        current = _condition(raw, ConditionType.RESOURCE_READY)
        waited = _seconds_since(current) if _is_provisioning(current, raw) else 0.0
        timeout = self._settings.provisioning.readiness_timeout_s
        if waited > timeout or (current or {}).get("reason") == "ProvisioningTimeout":
            message = f"nodes not Ready after {timeout:.0f}s: {detail}"
            span.set_status(trace.StatusCode.ERROR, f"ProvisioningTimeout: {message}")
            await self._write(
                raw, span, ready=(ConditionStatus.FALSE, "ProvisioningTimeout", message)
            )
            return
        await self._write(raw, span, ready=(ConditionStatus.UNKNOWN, "Provisioning", detail))

    async def _refused(
        self,
        raw: dict[str, Any],
        workspace: Workspace,
        target: Target,
        failure: CloudFailure,
        span: trace.Span,
    ) -> None:
        plan = workspace.status.plan if workspace.status else None
        excluded = list(plan.excluded_instance_types or []) if plan else []
        named = workspace.resource.instance_type is not None
        limit = self._settings.provisioning.max_replans
        message = f"{target.instance_type}: {failure.message}"
        replan = failure.capacity and not named and len(excluded) < limit
        if replan:
            message += (
                f"; asking the planner for another SKU (re-plan {len(excluded) + 1} of {limit})"
            )
        elif failure.capacity and not named:
            message += f"; gave up after {len(excluded)} re-plans (max_replans={limit})"
        elif failure.capacity:
            message += "; the Workspace names this instance type, so it is retried, not replaced"
        span.set_status(trace.StatusCode.ERROR, f"{failure.reason}: {message}"[:_MAX_MESSAGE])
        await self._backend.discard(target)
        retry_at = time.monotonic() + self._settings.provisioning.refused_retry_s
        self._held[target.uid] = (target.instance_type.lower(), retry_at)
        await self._write(raw, span, ready=(ConditionStatus.FALSE, failure.reason, message))
        await events.record(
            self._kube,
            raw,
            reason=failure.reason,
            message=message,
            component=self._settings.service_name,
            type="Warning",
        )
        if not replan:
            return
        try:
            await self._bus.publish(
                ReplanRequested(
                    workspace=WorkspaceRef.of(workspace),
                    excluded_instance_types=[target.instance_type],
                    reason=f"{failure.reason} for {target.instance_type}: {failure.message}",
                )
            )
        except BusError as exc:
            self._held.pop(target.uid, None)
            raise TemporaryError(f"cannot ask for a re-plan of {target.key}: {exc}") from exc

    # ------------------------------------------------------------------ deletion
    async def _release(self, raw: dict[str, Any], workspace: Workspace, span: trace.Span) -> None:
        meta = workspace.metadata
        namespace, name, uid = meta.namespace or "", meta.name or "", meta.uid or ""
        left = await self._backend.release(namespace, name, uid)
        nodes = await self._kube.list(
            resources.NODES, label_selector=naming.workspace_selector(namespace, name)
        )
        left += [f"node {n['metadata']['name']}" for n in nodes.get("items") or []]
        if left:
            message = "waiting for " + ", ".join(left) + " to be removed"
            await self._write(
                raw, span, deleting=(ConditionStatus.TRUE, "WorkspaceDeleting", message)
            )
            return
        span.add_event("nodes released")
        await self._remove_finalizer(raw)

    async def _collect(self, ref: WorkspaceRef) -> None:
        """A Workspace is gone: free anything of it still there (its finalizer was bypassed).

        The event alone is not enough to delete nodes: anyone who can publish on the bus could
        forge it, and a stale one could outlive a re-created namesake. The apiserver must say,
        twice, that the Workspace is gone (`_gone`).
        """
        mine = [owned for owned in await self._backend.owned() if owned.uid == ref.uid]
        if not mine:
            return
        gone = await self._gone(mine)
        if not gone:
            log.warning("WorkspaceDeleted for %s, but it still exists: nothing removed", ref.key)
        for owned in gone:
            log.info("removing %s %s of deleted Workspace %s", owned.kind, owned.name, ref.key)
            await self._backend.remove(owned)

    async def collect_orphans(self) -> list[str]:
        """Remove NodeClaims / agent pools whose Workspace no longer exists; return their names."""
        removed = []
        candidates = [
            owned
            for owned in await self._backend.owned()
            if self._settings.namespace in (None, owned.namespace)
        ]
        for owned in await self._gone(candidates):
            log.info(
                "removing orphaned %s %s (Workspace %s/%s is gone)",
                owned.kind,
                owned.name,
                owned.namespace,
                owned.workspace,
            )
            await self._backend.remove(owned)
            removed.append(owned.name)
        return removed

    async def _gone(self, candidates: list[Owned]) -> list[Owned]:
        """Those whose Workspace the apiserver says is gone in two reads some seconds apart.

        Two reads, because one 404 may be a moment's (an apiserver restarting, its CRDs not yet
        served); both must be the object's own 404, never one for the resource type.
        """
        suspects = [owned for owned in candidates if await self._workspace_gone(owned)]
        if not suspects:
            return []
        await asyncio.sleep(self._settings.provisioning.gone_confirm_s)
        return [owned for owned in suspects if await self._workspace_gone(owned)]

    async def _workspace_gone(self, owned: Owned) -> bool:
        """True when the Workspace `owned` was made for no longer exists (by name and uid)."""
        try:
            live = await self._kube.get(
                resources.WORKSPACES, owned.workspace, namespace=owned.namespace
            )
        except errors.NotFoundError as exc:
            if exc.names(resources.WORKSPACES.plural, owned.workspace):
                return True
            # A 404 for the type (the CRD missing or not served yet) says nothing of the object.
            log.warning("keeping %s %s: %s", owned.kind, owned.name, exc)
            return False
        return bool(live["metadata"].get("uid") != owned.uid)  # a namesake: the old one is gone

    # ------------------------------------------------------------------ writes
    async def _add_finalizer(self, raw: dict[str, Any]) -> None:
        meta = raw["metadata"]
        for _ in range(3):
            finalizers = meta.get("finalizers") or []
            if naming.FINALIZER in finalizers:
                return
            # The uid guards against a re-created namesake; with no finalizers yet the whole list
            # is written, so the resourceVersion guards against one added meanwhile.
            ops: list[dict[str, Any]] = [
                {"op": "test", "path": "/metadata/uid", "value": meta["uid"]}
            ]
            if finalizers:
                ops.append(
                    {"op": "add", "path": "/metadata/finalizers/-", "value": naming.FINALIZER}
                )
            else:
                ops += [
                    {
                        "op": "test",
                        "path": "/metadata/resourceVersion",
                        "value": meta["resourceVersion"],
                    },
                    {"op": "add", "path": "/metadata/finalizers", "value": [naming.FINALIZER]},
                ]
            try:
                updated = await self._kube.patch(
                    resources.WORKSPACES,
                    meta["name"],
                    ops,
                    field_manager=self._settings.service_name,
                    namespace=meta["namespace"],
                )
            except (errors.InvalidError, errors.ConflictError):
                # A failed `test` (the object changed since it was read): read it and try again.
                fresh = await self._kube.get(
                    resources.WORKSPACES, meta["name"], namespace=meta["namespace"]
                )
                if fresh["metadata"].get("uid") != meta["uid"]:
                    raise
                meta.update(fresh["metadata"])
                continue
            meta.update(updated["metadata"])
            return
        raise errors.ConflictError(f"could not add the finalizer to {meta['name']}")

    async def _remove_finalizer(self, raw: dict[str, Any]) -> None:
        meta = raw["metadata"]
        finalizers = meta.get("finalizers") or []
        index = finalizers.index(naming.FINALIZER)
        path = f"/metadata/finalizers/{index}"
        try:
            await self._kube.patch(
                resources.WORKSPACES,
                meta["name"],
                [
                    {"op": "test", "path": path, "value": naming.FINALIZER},
                    {"op": "remove", "path": path},
                ],
                field_manager=self._settings.service_name,
                namespace=meta["namespace"],
            )
        except errors.NotFoundError:
            return

    async def _write(
        self,
        raw: dict[str, Any],
        span: trace.Span,
        *,
        ready: tuple[ConditionStatus, str, str] | None = None,
        deleting: tuple[ConditionStatus, str, str] | None = None,
        nodes: tuple[list[str], str | None] | None = None,
    ) -> None:
        """Apply the provisioner's status fields (all of them: it owns exactly what it applies).

        `nodes` are the worker nodes and the digest of the plan they were chosen for; both go out
        in the same apply as ResourceReady, whose observedGeneration is the generation of `raw`,
        the object this decision was made on (not whatever the Workspace is at write time).
        """
        meta = raw["metadata"]
        live = raw.get("status") or {}
        conditions = [Condition.model_validate(c) for c in live.get("conditions") or []]
        generation = meta.get("generation")
        wanted: dict[str, tuple[ConditionStatus, str, str]] = {}
        # Conditions kept as they were still name the generation they were decided for.
        kept: dict[str, int | None] = {}
        if ready is not None:
            status, reason, message = ready
            nodes_reason = "NodesReady" if status == ConditionStatus.TRUE else "NodeNotReady"
            wanted[ConditionType.RESOURCE_READY] = (status, reason, message)
            wanted[ConditionType.NODES_READY] = (
                ConditionStatus.TRUE if status == ConditionStatus.TRUE else ConditionStatus.FALSE,
                nodes_reason,
                message,
            )
        else:  # keep what was reported before the deletion started
            for kind in (ConditionType.RESOURCE_READY, ConditionType.NODES_READY):
                if (old := _condition(raw, kind)) is not None:
                    wanted[kind] = (ConditionStatus(old["status"]), old["reason"], old["message"])
                    kept[kind] = old.get("observedGeneration")
        if deleting is not None:
            wanted[ConditionType.WORKSPACE_DELETING] = deleting
        worker_nodes, plan_digest = _worker_nodes(live, ready, nodes)
        written = []
        changed = worker_nodes != list(live.get("workerNodes") or []) or plan_digest != live.get(
            "workerNodesPlanDigest"
        )
        for kind_name, (status, reason, full_message) in wanted.items():
            message = full_message[:_MAX_MESSAGE]
            old = _condition(raw, kind_name)
            observed = kept.get(kind_name, generation)
            same = old is not None and (
                old.get("status"),
                old.get("reason"),
                old.get("message"),
                old.get("observedGeneration"),
            ) == (status.value, reason, message, observed)
            changed |= not same
            if old is None or old.get("status") != status.value or old.get("reason") != reason:
                span.add_event(
                    "condition",
                    {
                        "type": kind_name,
                        "status": status.value,
                        "reason": reason,
                        "message": message,
                    },
                )
            written.append(
                set_condition(
                    conditions,
                    type=kind_name,
                    status=status,
                    reason=reason,
                    message=message,
                    observed_generation=observed,
                )
            )
        if not changed:
            return
        body: dict[str, Any] = {"conditions": [c.to_wire() for c in written]}
        if worker_nodes:
            body["workerNodes"] = worker_nodes
        if plan_digest is not None:
            body["workerNodesPlanDigest"] = plan_digest
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


def _worker_nodes(
    live: dict[str, Any],
    ready: tuple[ConditionStatus, str, str] | None,
    nodes: tuple[list[str], str | None] | None,
) -> tuple[list[str], str | None]:
    """status.workerNodes and workerNodesPlanDigest as the next apply should say them."""
    if ready is not None and ready[0] != ConditionStatus.TRUE:
        return [], None  # no Ready nodes: none to name, and no plan they were chosen for
    if nodes is None:  # deleting: keep what was reported
        nodes = (list(live.get("workerNodes") or []), live.get("workerNodesPlanDigest"))
    worker_nodes, plan_digest = nodes
    return worker_nodes, plan_digest if worker_nodes else None


def _condition(raw: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = (raw.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


def _settled(raw: dict[str, Any]) -> bool:
    """ResourceReady=True for the current generation, with worker nodes recorded for its plan.

    A new generation (even one whose plan is unchanged) or a new plan of the same generation is
    not settled: ResourceReady must be reported again for it, since the deployer and the tuner
    (nodes_ready) and the watcher's summary count only a condition of the current generation.
    """
    ready = _condition(raw, ConditionType.RESOURCE_READY)
    status = raw.get("status") or {}
    return (
        ready is not None
        and ready.get("status") == "True"
        and ready.get("observedGeneration") == raw["metadata"].get("generation")
        and bool(status.get("workerNodes"))
        and status.get("workerNodesPlanDigest") == (status.get("plan") or {}).get("digest")
    )


def _is_provisioning(condition: dict[str, Any] | None, raw: dict[str, Any]) -> bool:
    return (
        condition is not None
        and condition.get("reason") == "Provisioning"
        and condition.get("observedGeneration") == raw["metadata"].get("generation")
    )


def _seconds_since(condition: dict[str, Any] | None) -> float:
    stamp = (condition or {}).get("lastTransitionTime")
    if not stamp:
        return 0.0
    since = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    return (datetime.now(UTC) - since).total_seconds()


def _nanos(timestamp: str | None) -> int | None:
    """An RFC 3339 timestamp of the apiserver as nanoseconds since the epoch (spans' unit)."""
    if not timestamp:
        return None
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1_000_000_000)
