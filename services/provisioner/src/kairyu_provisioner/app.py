"""The provisioner service: makes the plan's GPU nodes exist and reports when they are Ready.

One `reconcile(key)` per Workspace, level-triggered, reading the Workspace, its NodeClaims and its
Nodes from the service's view (kairyu_core.view, fed over NATS), never from the apiserver on the
hot path. It compares the nodes the Workspace has with the nodes its plan needs; backends create
what is missing under deterministic names, so a repeat or a restart asks for the same objects
again. It owns `ResourceReady`, `NodesReady`, `WorkspaceDeleting`, `status.workerNodes`,
`status.workerNodesPlanDigest` (the plan those nodes were chosen for) and
`status.replanRequest`, and writes them only when they differ from the view's. When the cloud
refuses a SKU for quota or capacity it asks the planner for another by writing
`status.replanRequest`, up to `max_replans` SKUs. What no change in the view announces (a
readiness timeout, bring-your-own nodes appearing, an ARM operation finishing) is looked at again
through `requeue_after`, not by periodic scans.

A finalizer keeps a Workspace until its NodeClaims / agent pools and their nodes are gone; it is
removed only after the apiserver (and ARM) confirm that nothing is left. Nothing is removed
without the finalizer on the view's word alone: a Workspace missing from the view has its
resources removed only when the apiserver says twice that it is gone (`_gone`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError
from opentelemetry import trace
from pydantic import ValidationError

from kairyu_contracts.api import (
    Condition,
    ConditionStatus,
    ConditionType,
    Workspace,
    parse_workspace,
    set_condition,
)
from kairyu_contracts.catalog import Catalog
from kairyu_core.bus import TemporaryError
from kairyu_core.kube import (
    GoingConfirmation,
    KubeClient,
    apply_workspace_status,
    errors,
    resources,
    workspace_events,
)
from kairyu_core.rollout_trace import rollout_context
from kairyu_core.view import View
from kairyu_provisioner import naming
from kairyu_provisioner.backends import Backend, Owned, Progress
from kairyu_provisioner.failures import CloudFailure
from kairyu_provisioner.node_target import NodeTarget, target_of
from kairyu_provisioner.readiness import Selection, select
from kairyu_provisioner.settings import ProvisionerSettings
from kairyu_provisioner.surge import surge_of

log = logging.getLogger(__name__)
tracer = trace.get_tracer("kairyu.provisioner")


_MAX_MESSAGE = 2048
_MAX_REPLAN_REASON = 1024  # the CRD's limit on status.replanRequest.reason
_RETRY_S = 5.0  # an apiserver or ARM error: look again after this (growing per key)
_SETTLE_S = 10.0
"""How long a status write of this process is trusted while the view still shows the version it
was decided on (s): the watcher publishes the new version within milliseconds."""
_MIN_REQUEUE_S = 0.5  # never look again sooner than this, whatever the arithmetic says


class _Keep:
    """`_write`'s default for status.surgeReplaces: what the Workspace says now."""


_KEEP = _Keep()
_Wait = tuple[str, int | None, str | None]  # a wait for nodes: Workspace uid, generation, plan


class Provisioner:
    """Reconciles each Workspace's nodes from the view."""

    def __init__(
        self,
        *,
        settings: ProvisionerSettings,
        kube: KubeClient,
        view: View,
        catalog: Catalog,
        backend: Backend,
    ) -> None:
        self._settings = settings
        self._kube = kube
        self._view = view
        self._catalog = catalog
        self._backend = backend
        # uid → (SKU the cloud refused, monotonic time before which it is not asked again)
        self._going = GoingConfirmation(kube)
        self._held: dict[str, tuple[str, float]] = {}
        # namespace/name → (uid, resourceVersion read, body applied, when): a status write the
        # view does not show yet is not sent again for the same version.
        self._written: dict[str, tuple[str, str, dict[str, Any], float]] = {}
        # namespace/name → the wait of its last progress message, and when it was written
        self._progress_at: dict[str, tuple[_Wait, float]] = {}
        # namespace/name → a wait whose first message is held, and when this process saw it start
        self._held_since: dict[str, tuple[_Wait, float]] = {}
        # uid → when the finalizer was added (the view shows it a moment later)
        self._finalized: dict[str, float] = {}
        # (uid, plan digest) → why its update goes without a spare node (the cloud refused one)
        self._no_surge: dict[tuple[str, str], str] = {}

    # ------------------------------------------------------------------ one Workspace
    async def reconcile(self, key: str) -> float | None:
        """Bring the Workspace `namespace/name`'s nodes and ResourceReady in line with its plan.

        Returns seconds after which to look again, or None to wait for the next change.
        """
        namespace = key.partition("/")[0]
        if self._settings.namespace and namespace != self._settings.namespace:
            return None
        raw = self._view.workspace(key)
        try:
            if raw is None:
                self._written.pop(key, None)
                self._progress_at.pop(key, None)
                self._held_since.pop(key, None)
                await self._collect(key)
                return None
            return await self._reconcile(key, raw)
        except (errors.KubeError, AzureError) as exc:
            raise TemporaryError(f"cannot provision {key}: {exc}", delay=_RETRY_S) from exc

    async def _reconcile(self, key: str, raw: dict[str, Any]) -> float | None:
        try:
            workspace = parse_workspace(raw)
        except ValidationError:
            return None  # the planner explains unreadable Workspaces in Planned
        meta = workspace.metadata
        deleting = meta.deletion_timestamp is not None
        target = None if deleting else target_of(workspace, self._catalog)
        if not deleting and target is None:
            return None  # not planned (yet) for this generation
        if deleting and naming.FINALIZER not in (meta.finalizers or []):
            return None  # nothing of ours to free
        note = None
        if target is not None:
            target, note = self._with_surge(key, raw, target)
        if target is not None and _settled(raw):
            selection = self._select(key, target)
            reported = sorted((raw.get("status") or {}).get("workerNodes") or [])
            if selection.complete and selection.nodes == reported:
                return None  # still as reported: nothing to do, nothing to write
        with tracer.start_as_current_span(
            "provision",
            # The rollout's trace, whichever change or timer led here (docs/observability.md).
            context=rollout_context(meta.uid, meta.generation),
            attributes={
                "kairyu.workspace": key,
                "kairyu.generation": meta.generation or 0,
                "kairyu.provisioner.backend": self._backend.name,
            },
        ) as span:
            if target is None:
                # The view alone must not free a live Workspace's nodes: ask the apiserver.
                if not await self._going(meta.namespace or "", meta.name or "", meta.uid or ""):
                    return None
                return await self._release(key, raw, workspace, span)
            span.set_attributes(
                {
                    "kairyu.plan.instance_type": target.instance_type,
                    "kairyu.plan.node_count": target.node_count,
                }
            )
            if target.node_count > self._settings.provisioning.max_nodes:
                await self._over_limit(raw, target, span)
                return None
            return await self._provision(key, raw, workspace, target, span, note=note)

    def _with_surge(
        self, key: str, raw: dict[str, Any], target: NodeTarget
    ) -> tuple[NodeTarget, str | None]:
        """The target during an update of a serving single-node Workspace (.surge).

        And a note for ResourceReady's message, on a spare node or on its absence.
        """
        surge = surge_of(raw, self._view.owned("Pod", key))
        if surge.phase == "none":
            return target, None
        spare = "a spare node for the update, freed after it"
        nodes = self._view.owned("Node", key)
        if surge.phase == "rolling":
            if not _same_sku(nodes, surge.nodes, target.instance_type):
                return target, None  # planned again on another SKU: new nodes come anyway
            return replace(target, node_count=2, replacing=surge.replaces), spare
        if surge.phase == "done":
            return replace(target, current_nodes=surge.nodes, keep_nodes=surge.nodes), None
        # begin: one node serves (or served) the previous plan
        serving = replace(target, current_nodes=surge.nodes, keep_nodes=surge.nodes)
        why = None
        if not self._backend.surges:
            why = f"the {self._backend.name} backend makes no spare node"
        elif self._settings.provisioning.max_nodes < 2:  # noqa: PLR2004 - the node and a spare
            why = "the node limit (KAIRYU_PROVISIONING__MAX_NODES) is 1"
        elif not _same_sku(nodes, surge.nodes, target.instance_type):
            return target, None  # another SKU: new nodes come anyway
        else:
            why = self._no_surge.get((target.uid, target.plan_digest or ""))
        if why is not None:
            return serving, (
                f"no spare node for the update ({why}): the model's pod is replaced in place, "
                "with downtime until the new one is ready"
            )
        return replace(serving, node_count=2, replacing=surge.replaces), spare

    async def _provision(
        self,
        key: str,
        raw: dict[str, Any],
        workspace: Workspace,
        target: NodeTarget,
        span: trace.Span,
        *,
        note: str | None = None,
    ) -> float | None:
        if self._backend.creates_nodes:
            await self._add_finalizer(raw)
        if (held := self._on_hold(target)) is not None:
            return held  # refused: wait for a new plan, or for the retry interval to pass
        progress = await self._backend.ensure(target, self._view.owned("NodeClaim", key))
        if progress.failure is not None and target.replacing is not None:
            # The spare was refused: update in place rather than move the Workspace elsewhere
            # (the serving node is never part of a fallback to another SKU).
            reason = f"{progress.failure.reason}: {progress.failure.message}"[:200]
            self._no_surge[(target.uid, target.plan_digest or "")] = f"refused, {reason}"
            if len(self._no_surge) > _RECENT_LIMIT:
                del self._no_surge[next(iter(self._no_surge))]
            span.add_event("spare node refused", {"reason": reason})
            return self._settings.provisioning.check_interval_s
        if progress.failure is not None:
            return await self._refused(raw, workspace, target, progress.failure, span)
        selection = self._select(key, target)
        if selection.complete:
            await self._ready(
                key=key,
                raw=raw,
                workspace=workspace,
                target=target,
                selection=selection,
                span=span,
                note=note,
            )
            return None
        return await self._waiting(raw, target, selection, progress, span)

    async def _over_limit(self, raw: dict[str, Any], target: NodeTarget, span: trace.Span) -> None:
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

    def _on_hold(self, target: NodeTarget) -> float | None:
        """Seconds until the target's refused SKU may be asked for again, or None if not held."""
        held = self._held.get(target.uid)
        if held is None:
            return None
        sku, until = held
        left = until - time.monotonic()
        if sku == target.instance_type.lower() and left > 0:
            return max(left, _MIN_REQUEUE_S)
        del self._held[target.uid]
        return None

    def _nodes(self, key: str) -> list[dict[str, Any]]:
        """The candidate nodes in the view: the Workspace's own, or every Node for byo."""
        if self._backend.creates_nodes:
            return self._view.owned("Node", key)
        return self._view.all("Node")

    def _select(self, key: str, target: NodeTarget) -> Selection:
        return select(
            self._nodes(key),
            count=target.node_count,
            instance_type=target.instance_type,
            preferred=target.preferred_nodes,
            current=target.current_nodes,
            selector=target.selector if not self._backend.creates_nodes else None,
        )

    async def _ready(
        self,
        *,
        key: str,
        raw: dict[str, Any],
        workspace: Workspace,
        target: NodeTarget,
        selection: Selection,
        span: trace.Span,
        note: str | None = None,
    ) -> None:
        message = f"{len(selection.nodes)} {target.instance_type} node(s) Ready with GPUs"
        if note:
            message += f"; {note}"
        written = await self._write(
            raw,
            span,
            ready=(ConditionStatus.TRUE, "NodesReady", message),
            nodes=(selection.nodes, target.plan_digest),
            replaces=target.replacing,
        )
        current = _condition(raw, ConditionType.RESOURCE_READY)
        if written and (current is None or current.get("status") != ConditionStatus.TRUE.value):
            self._trace_node_waits(key, workspace, target, selection.nodes)
        span.set_attribute("kairyu.nodes", selection.nodes)

    def _trace_node_waits(
        self, key: str, workspace: Workspace, target: NodeTarget, names: list[str]
    ) -> None:
        """One span per node of the rollout, from its creation to Ready: the wait for capacity.

        Recorded once the nodes are Ready, with their own timestamps (the view keeps a Node's
        creationTimestamp and its Ready condition's lastTransitionTime), because the wait
        happened across many reconciles (and maybe provisioner restarts) that each saw only
        part of it.
        """
        rollout = rollout_context(workspace.metadata.uid, workspace.metadata.generation)
        for node in self._nodes(key):
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
        target: NodeTarget,
        selection: Selection,
        progress: Progress,
        span: trace.Span,
    ) -> float | None:
        detail = "; ".join([selection.summary(), *progress.waiting])
        interval = self._settings.provisioning.check_interval_s
        if not self._backend.creates_nodes:
            selector = self._backend.node_selector(target) or "any labels"
            message = (
                f"not enough existing nodes: need {target.node_count} Ready "
                f"{target.instance_type} node(s) with GPUs matching {selector}; {detail}"
            )
            await self._write(raw, span, ready=(ConditionStatus.FALSE, "NotEnoughNodes", message))
            # A node of the user's that appears or turns Ready carries no Workspace label, so
            # no change wakes this Workspace: look again on a timer.
            return interval
        meta = raw["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        wait = (str(meta.get("uid")), meta.get("generation"), target.plan_digest)
        current = _condition(raw, ConditionType.RESOURCE_READY)
        # Since the condition says the wait started, or, while its first message is held,
        # since this process saw it start.
        waited = _seconds_since(current) if _is_provisioning(current, raw) else 0.0
        started = self._held_since.get(key)
        if started is not None and started[0] == wait:
            waited = max(waited, time.monotonic() - started[1])
        timeout = self._settings.provisioning.readiness_timeout_s
        poll = interval if progress.poll else None
        if waited > timeout or (current or {}).get("reason") == "ProvisioningTimeout":
            message = f"nodes not Ready after {timeout:.0f}s: {detail}"
            span.set_status(trace.StatusCode.ERROR, f"ProvisioningTimeout: {message}")
            await self._write(
                raw,
                span,
                ready=(ConditionStatus.FALSE, "ProvisioningTimeout", message),
                replaces=target.replacing,
            )
            return poll  # nodes that come later turn it True: their changes wake this key
        hold = self._progress_hold(key, wait, first=current is None)
        if hold is None:
            provisioning = (ConditionStatus.UNKNOWN, "Provisioning", detail)
            if await self._write(raw, span, ready=provisioning, replaces=target.replacing):
                self._remember_progress(key, wait)
        # Come back when the timeout would expire (the condition's transition time, once the
        # view shows it, is when the wait started), or sooner while the backend must be polled,
        # or when a held progress message may be written.
        again = max(timeout - waited, _MIN_REQUEUE_S)
        for sooner in (poll, hold):
            if sooner is not None:
                again = min(again, sooner)
        return again

    def _progress_hold(self, key: str, wait: _Wait, *, first: bool) -> float | None:
        """Seconds before a new progress message of this wait may be written, or None if now.

        Held after this process wrote a progress message of the same wait (the Workspace's uid,
        generation and plan), whatever the view shows yet: under load the view may take a while
        to show that write, and the claims' and nodes' changes keep coming meanwhile. The first
        message of a Workspace that has no ResourceReady at all (a new one) is held too, from the
        start of the wait: nodes Ready within the interval need no message, only their
        ResourceReady=True. Any other first message (an edit, a re-plan: the condition shown is
        about an earlier plan) is written at once.
        """
        interval = self._settings.provisioning.progress_interval_s
        last = self._progress_at.get(key)
        if last is None or last[0] != wait:
            if not first or interval <= 0:
                return None
            self._remember_progress(key, wait)  # the wait starts now, with nothing to say yet
            self._held_since.pop(key, None)
            self._held_since[key] = (wait, time.monotonic())
            if len(self._held_since) > _RECENT_LIMIT:
                del self._held_since[next(iter(self._held_since))]
            return max(interval, _MIN_REQUEUE_S)
        left = interval - (time.monotonic() - last[1])
        return max(left, _MIN_REQUEUE_S) if left > 0 else None

    def _remember_progress(self, key: str, wait: _Wait) -> None:
        self._progress_at.pop(key, None)
        self._progress_at[key] = (wait, time.monotonic())
        if len(self._progress_at) > _RECENT_LIMIT:
            del self._progress_at[next(iter(self._progress_at))]

    async def _refused(
        self,
        raw: dict[str, Any],
        workspace: Workspace,
        target: NodeTarget,
        failure: CloudFailure,
        span: trace.Span,
    ) -> float:
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
        retry_s = self._settings.provisioning.refused_retry_s
        self._held[target.uid] = (target.instance_type.lower(), time.monotonic() + retry_s)
        request = None
        if replan and target.plan_digest is not None:
            reason = f"{failure.reason} for {target.instance_type}: {failure.message}"
            request = {
                "planDigest": target.plan_digest,
                "instanceType": target.instance_type,
                "reason": reason[:_MAX_REPLAN_REASON],
            }
        written = await self._write(
            raw, span, ready=(ConditionStatus.FALSE, failure.reason, message), replan=request
        )
        if written:  # the history, once per refusal (not on every look while it is held)
            await workspace_events.record(
                self._kube,
                raw,
                reason=failure.reason,
                message=message,
                component=self._settings.service_name,
                type="Warning",
            )
        # A re-plan arrives as a change of the Workspace; the hold ends the wait otherwise.
        return retry_s

    # ------------------------------------------------------------------ deletion
    async def _release(
        self, key: str, raw: dict[str, Any], workspace: Workspace, span: trace.Span
    ) -> float | None:
        meta = workspace.metadata
        namespace, name, uid = meta.namespace or "", meta.name or "", meta.uid or ""
        left = await self._backend.release(namespace, name, uid, self._view.owned("NodeClaim", key))
        left += [f"node {n['metadata']['name']}" for n in self._view.owned("Node", key)]
        if not left:
            # The view says nothing is left; the apiserver (and ARM) must agree before the
            # finalizer goes, since the view may not show a claim created a moment ago.
            left = await self._backend.remaining(namespace, name, uid)
            nodes = await self._kube.list(
                resources.NODES, label_selector=naming.workspace_selector(namespace, name)
            )
            left += [f"node {n['metadata']['name']}" for n in nodes.get("items") or []]
        if left:
            message = "waiting for " + ", ".join(left) + " to be removed"
            await self._write(
                raw, span, deleting=(ConditionStatus.TRUE, "WorkspaceDeleting", message)
            )
            # Removals show in the view (claims and nodes go); an agent pool being deleted
            # does not until its nodes go, so look again on a timer too.
            return self._settings.provisioning.check_interval_s
        span.add_event("nodes released")
        await self._remove_finalizer(raw)
        return None

    async def _collect(self, key: str) -> None:
        """The view holds no Workspace `key`: free what is still there of it.

        Its finalizer was bypassed, or it went while this service was away. The view alone is
        not enough to delete nodes: a state missing from it (an outage, a stream purged, a
        forged tombstone) must not free a live Workspace's nodes. The apiserver must say,
        twice, that the Workspace is gone (`_gone`).
        """
        if not self._backend.has_objects and not self._view.owned("Node", key):
            return  # agent pools: the orphan scan looks for them in ARM
        candidates = [
            owned
            for owned in await self._backend.owned(self._view.owned("NodeClaim", key))
            if owned.key == key
        ]
        for owned in await self._gone(candidates):
            log.info("removing %s %s of deleted Workspace %s", owned.kind, owned.name, key)
            await self._backend.remove(owned)

    async def collect_orphans(self) -> list[str]:
        """Remove agent pools / NodeClaims whose Workspace no longer exists; return their names.

        For backends whose resources are in the view (NodeClaims), reconciling every key of the
        view at start does this; agent pools live only in ARM, so they are listed there (which
        costs the apiserver nothing) and only the suspects' Workspaces are read.
        """
        removed = []
        candidates = [
            owned
            for owned in await self._backend.owned(self._view.all("NodeClaim"))
            if self._settings.namespace in (None, owned.namespace)
            and (self._view.workspace(owned.key) or {}).get("metadata", {}).get("uid") != owned.uid
        ]
        for owned in await self._gone(candidates):
            log.info(
                "removing orphaned %s %s (Workspace %s is gone)", owned.kind, owned.name, owned.key
            )
            await self._backend.remove(owned)
            removed.append(owned.name)
        return removed

    async def run_orphan_scan(self, ready: asyncio.Event) -> None:
        """For backends without Kubernetes objects: scan for orphans, at start and then slowly.

        Runs until cancelled (only for such backends: the others' orphans are keys of the view).
        The first scan waits until the view is synced; then one every `check_interval_s` times
        ten (agent pools outlive their Workspace only when the finalizer was bypassed: rare, and
        ARM is not to be listed every few seconds).
        """
        await ready.wait()
        while True:
            try:
                await self.collect_orphans()
            except (errors.KubeError, AzureError) as exc:
                log.warning("orphan scan failed, trying again later: %s", exc)
            except Exception:  # a bug or odd data must not stop the scans for good
                log.exception("orphan scan failed, trying again later")
            await asyncio.sleep(self._settings.provisioning.check_interval_s * _ORPHAN_SCAN_FACTOR)

    async def _gone(self, candidates: Sequence[Owned]) -> list[Owned]:
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
        """Add the finalizer unless the view's Workspace has it (or this process just added it).

        One server-side apply of `metadata.finalizers` naming only ours: the list is a set, so
        finalizers of others stay, whatever version of the Workspace the view holds. The uid in
        the body is a precondition: a re-created namesake is refused (422), a deleted one too
        (409), instead of getting a finalizer meant for its predecessor.
        """
        meta = raw["metadata"]  # the view's value is shared: never edit it
        uid = str(meta["uid"])
        if naming.FINALIZER in (meta.get("finalizers") or []):
            self._finalized.pop(uid, None)
            return
        added = self._finalized.get(uid)
        if added is not None and time.monotonic() - added < _SETTLE_S:
            return
        body = {
            "apiVersion": resources.WORKSPACES.api_version,
            "kind": resources.WORKSPACES.kind,
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": uid,
                "finalizers": [naming.FINALIZER],
            },
        }
        await self._kube.apply(
            resources.WORKSPACES, body, field_manager=self._settings.service_name
        )
        self._finalized[uid] = time.monotonic()
        if len(self._finalized) > _RECENT_LIMIT:
            del self._finalized[next(iter(self._finalized))]

    async def _remove_finalizer(self, raw: dict[str, Any]) -> None:
        """Remove the finalizer, at its index in the view's copy or, if it moved, the live one's."""
        meta = raw["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        for _ in range(2):
            if naming.FINALIZER not in finalizers:
                return
            path = f"/metadata/finalizers/{finalizers.index(naming.FINALIZER)}"
            try:
                await self._kube.patch(
                    resources.WORKSPACES,
                    meta["name"],
                    [
                        {"op": "test", "path": "/metadata/uid", "value": meta["uid"]},
                        {"op": "test", "path": path, "value": naming.FINALIZER},
                        {"op": "remove", "path": path},
                    ],
                    field_manager=self._settings.service_name,
                    namespace=meta["namespace"],
                )
            except errors.NotFoundError:
                return
            except (errors.InvalidError, errors.ConflictError):
                try:  # another finalizer went first: the index moved
                    fresh = await self._kube.get(
                        resources.WORKSPACES, meta["name"], namespace=meta["namespace"]
                    )
                except errors.NotFoundError:
                    return
                if fresh["metadata"].get("uid") != meta["uid"]:
                    return  # a namesake: not ours to touch
                finalizers = list(fresh["metadata"].get("finalizers") or [])
                continue
            self._finalized.pop(str(meta["uid"]), None)
            return
        # Moved under us twice: look again soon rather than leave the finalizer until the
        # Workspace's next change (it may have none).
        raise TemporaryError("the finalizer moved twice while being removed", delay=_RETRY_S)

    async def _write(
        self,
        raw: dict[str, Any],
        span: trace.Span,
        *,
        ready: tuple[ConditionStatus, str, str] | None = None,
        deleting: tuple[ConditionStatus, str, str] | None = None,
        nodes: tuple[list[str], str | None] | None = None,
        replan: dict[str, str] | None = None,
        replaces: str | _Keep | None = _KEEP,
    ) -> bool:
        """Apply the provisioner's status fields (all of them: it owns exactly what it applies).

        `nodes` are the worker nodes and the digest of the plan they were chosen for; both go out
        in the same apply as ResourceReady, whose observedGeneration is the generation of `raw`,
        the object this decision was made on (not whatever the Workspace is at write time).
        `replan` is a new re-plan request; without one, a request about the current plan is kept
        (the planner may not have answered it yet) and a stale one is dropped. `replaces` is
        status.surgeReplaces (None drops it); by default it is kept as the Workspace says it.
        Returns whether anything was written.
        """
        meta = raw["metadata"]
        live = raw.get("status") or {}
        conditions = [Condition.model_validate(c) for c in live.get("conditions") or []]
        generation = meta.get("generation")
        wanted, kept = _wanted(raw, ready, deleting)
        worker_nodes, plan_digest = _worker_nodes(live, ready, nodes)
        request = replan if replan is not None else _current_request(live)
        surge = live.get("surgeReplaces") if isinstance(replaces, _Keep) else replaces
        written = []
        changed = (
            worker_nodes != list(live.get("workerNodes") or [])
            or plan_digest != live.get("workerNodesPlanDigest")
            or request != live.get("replanRequest")
            or surge != live.get("surgeReplaces")
        )
        transitions = []
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
                transitions.append(
                    {
                        "type": kind_name,
                        "status": status.value,
                        "reason": reason,
                        "message": message,
                    }
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
            return False
        body: dict[str, Any] = {"conditions": [c.to_wire() for c in written]}
        if worker_nodes:
            body["workerNodes"] = worker_nodes
        if plan_digest is not None:
            body["workerNodesPlanDigest"] = plan_digest
        if request is not None:
            body["replanRequest"] = request
        if surge:
            body["surgeReplaces"] = surge
        if self._already_written(meta, body):
            return False  # written already; the view has not shown it yet
        for attributes in transitions:
            span.add_event("condition", attributes)
        try:
            await apply_workspace_status(
                self._kube, live=raw, status=body, field_manager=self._settings.service_name
            )
        except errors.NotFoundError:
            return False
        self._remember_written(meta, body)
        if ready is None or ready[1] != "Provisioning":
            # Anything but progress ends the wait: the next progress message is news, not held.
            self._progress_at.pop(f"{meta['namespace']}/{meta['name']}", None)
            self._held_since.pop(f"{meta['namespace']}/{meta['name']}", None)
        return True

    def _already_written(self, meta: dict[str, Any], body: dict[str, Any]) -> bool:
        """Whether `body` was applied on this very version of the Workspace a moment ago."""
        last = self._written.get(f"{meta['namespace']}/{meta['name']}")
        return (
            last is not None
            and (last[0], last[1]) == (str(meta.get("uid")), str(meta.get("resourceVersion")))
            and _same_body(last[2], body)
            and time.monotonic() - last[3] < _SETTLE_S
        )

    def _remember_written(self, meta: dict[str, Any], body: dict[str, Any]) -> None:
        key = f"{meta['namespace']}/{meta['name']}"
        self._written.pop(key, None)
        uid, version = str(meta.get("uid")), str(meta.get("resourceVersion"))
        self._written[key] = (uid, version, body, time.monotonic())
        if len(self._written) > _RECENT_LIMIT:
            del self._written[next(iter(self._written))]


_ORPHAN_SCAN_FACTOR = 10  # agent-pool orphan scans: every ten check intervals (5 min by default)
_RECENT_LIMIT = 50_000  # writes remembered per Workspace before the oldest is forgotten


def _wanted(
    raw: dict[str, Any],
    ready: tuple[ConditionStatus, str, str] | None,
    deleting: tuple[ConditionStatus, str, str] | None,
) -> tuple[dict[str, tuple[ConditionStatus, str, str]], dict[str, int | None]]:
    """The conditions to apply, and the observedGeneration of those kept as they were."""
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
    return wanted, kept


def _same_body(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two status bodies equal but for the conditions' lastTransitionTime (set at write time)."""

    def strip(body: dict[str, Any]) -> dict[str, Any]:
        conditions = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in body.get("conditions") or []
        ]
        return {**body, "conditions": conditions}

    return strip(a) == strip(b)


def _current_request(live: dict[str, Any]) -> dict[str, Any] | None:
    """status.replanRequest if it is about the current plan (not answered yet), else None."""
    request = live.get("replanRequest")
    digest = (live.get("plan") or {}).get("digest")
    if not isinstance(request, dict) or digest is None or request.get("planDigest") != digest:
        return None
    return request


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


def _same_sku(nodes: list[dict[str, Any]], names: tuple[str, ...], instance_type: str) -> bool:
    """Whether the nodes `names` are of `instance_type` (their well-known label)."""
    types = {
        ((n.get("metadata") or {}).get("labels") or {}).get("node.kubernetes.io/instance-type", "")
        for n in nodes
        if (n.get("metadata") or {}).get("name") in names
    }
    return bool(types) and {t.lower() for t in types} == {instance_type.lower()}


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
