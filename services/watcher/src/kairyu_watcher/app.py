"""The watcher: the only component holding Kubernetes watches.

It turns Workspace changes into WorkspaceObserved / WorkspaceDeleted, changes of objects labelled
`kaito.sh/workspace` into ObjectChanged, re-publishes every Workspace on a resync interval, starts
each generation's rollout trace, and writes the summary (`WorkspaceReady`, `status.state`).
Publishing is idempotent (Nats-Msg-Id), so a restart that re-lists everything is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast

from opentelemetry import context
from pydantic import ValidationError

from kairyu_core import metrics
from kairyu_core.api import (
    Condition,
    ConditionStatus,
    ConditionType,
    Workspace,
    WorkspaceState,
    parse_workspace,
    set_condition,
)
from kairyu_core.bus import Bus, BusError
from kairyu_core.events import (
    Event,
    ObjectChanged,
    WorkspaceDeleted,
    WorkspaceObserved,
    WorkspaceRef,
)
from kairyu_core.kube import JSON, KubeClient, WatchEvent, apply_status, errors, resources, watch
from kairyu_watcher import news, readiness, rollout_trace
from kairyu_watcher.settings import WatcherSettings

log = logging.getLogger(__name__)

WORKSPACE_LABEL = "kaito.sh/workspace"
WORKSPACE_NAMESPACE_LABEL = "kaito.sh/workspacenamespace"
CHILD_RESOURCES = (
    resources.NODES,
    resources.NODECLAIMS,
    resources.DEPLOYMENTS,
    resources.STATEFULSETS,
    resources.JOBS,
    resources.PODS,
)
ChildKind = Literal["Node", "NodeClaim", "Deployment", "StatefulSet", "Job", "Pod"]


@dataclass(frozen=True)
class _Written:
    uid: str | None
    condition: Condition
    state: WorkspaceState


class Watcher:
    """Follows the cluster and publishes what changed."""

    def __init__(self, *, settings: WatcherSettings, bus: Bus, kube: KubeClient) -> None:
        self._settings = settings
        self._bus = bus
        self._kube = kube
        self._known: dict[str, WorkspaceRef] = {}  # namespace/name -> latest version seen
        # namespace/name -> the rollout trace context of its current generation
        self._rollouts: dict[str, context.Context] = {}
        # namespace/name or object uid -> fingerprint last published (see news)
        self._published: dict[str, str] = {}
        # namespace/name -> the summary this watcher last wrote: newer than a queued event's copy
        self._written: dict[str, _Written] = {}

    async def run(self) -> None:
        """Watch and resync until cancelled."""
        await self._bus.ensure_stream()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._follow_workspaces())
            for resource in CHILD_RESOURCES:
                tasks.create_task(self._follow_children(resource))
            tasks.create_task(self._resync_periodically())

    # ------------------------------------------------------------------ Workspaces
    async def _follow_workspaces(self) -> None:
        async for change in watch(
            self._kube, resources.WORKSPACES, namespace=self._settings.namespace
        ):
            await self.on_workspace(change)

    async def on_workspace(self, change: WatchEvent) -> None:
        """Publish the change, start a new generation's trace, and keep the summary current."""
        try:
            workspace = parse_workspace(change.object)
        except ValidationError:
            # The CRD admitted it, so only a newer, incompatible CRD gets here: say so, go on.
            log.exception("cannot read Workspace %s; skipping it", change.key)
            return
        ref = WorkspaceRef.of(workspace)
        if change.type == "DELETED":
            self._known.pop(change.key, None)
            self._published.pop(change.key, None)
            self._written.pop(change.key, None)
            rollout = self._rollouts.pop(change.key, None)
            await self._publish(WorkspaceDeleted(workspace=ref), rollout)
            return
        self._known[change.key] = ref
        rollout = await self._rollout_context(workspace)
        if rollout is not None:
            self._rollouts[change.key] = rollout
        token = context.attach(rollout) if rollout is not None else None
        try:
            fingerprint = news.workspace_fingerprint(change.object)
            if self._published.get(change.key) != fingerprint:
                deleting = workspace.metadata.deletion_timestamp is not None
                if await self._publish(WorkspaceObserved(workspace=ref, deleting=deleting)):
                    self._published[change.key] = fingerprint
            await self._write_summary(change.key, workspace)
        finally:
            if token is not None:
                context.detach(token)

    async def _rollout_context(self, workspace: Workspace) -> context.Context | None:
        meta = workspace.metadata
        if rollout_trace.stored_generation(meta.annotations) == meta.generation:
            return rollout_trace.context_of(meta.annotations)
        value = rollout_trace.start_rollout(
            namespace=meta.namespace or "",
            name=meta.name or "",
            generation=meta.generation or 0,
            uid=meta.uid or "",
        )
        body: JSON = {
            "apiVersion": resources.WORKSPACES.api_version,
            "kind": resources.WORKSPACES.kind,
            "metadata": {
                "name": meta.name,
                "namespace": meta.namespace,
                "annotations": {rollout_trace.ANNOTATION: value},
            },
        }
        try:
            await self._kube.apply(
                resources.WORKSPACES, body, field_manager=self._settings.service_name
            )
        except errors.KubeError as exc:
            log.warning(
                "could not record the rollout trace of %s/%s: %s", meta.namespace, meta.name, exc
            )
        return rollout_trace.context_of({rollout_trace.ANNOTATION: value})

    async def _write_summary(self, key: str, workspace: Workspace) -> None:
        written = self._written.get(key)
        if written is not None and written.uid == workspace.metadata.uid:
            # The event may predate this watcher's last write; its own summary is the newer one.
            workspace = readiness.with_summary(workspace, written.condition, written.state)
        summary = readiness.summarize(workspace)
        status = workspace.status
        current = {c.type: c for c in (status.conditions if status else None) or []}
        ready = current.get(ConditionType.WORKSPACE_READY)
        unchanged = (
            ready is not None
            and (ready.status, ready.reason, ready.message)
            == (summary.status, summary.reason, summary.message)
            and ready.observed_generation == workspace.metadata.generation
            and status is not None
            and status.state == summary.state
        )
        if unchanged:
            return
        was = ready.status if ready is not None else None
        failed = summary.state.value == "Failed" and (
            status is None or status.state != summary.state
        )
        if failed or (summary.status == ConditionStatus.TRUE and was != ConditionStatus.TRUE):
            rollout_trace.record_outcome(
                key=f"{workspace.metadata.namespace}/{workspace.metadata.name}",
                generation=workspace.metadata.generation or 0,
                state=summary.state.value,
                ready=not failed,
            )
            if not failed:
                for phase, seconds in readiness.phase_durations(
                    workspace, datetime.now(UTC)
                ).items():
                    metrics.ROLLOUT_PHASE_SECONDS.labels(phase).observe(seconds)
        condition = set_condition(
            list(current.values()),
            type=ConditionType.WORKSPACE_READY,
            status=summary.status,
            reason=summary.reason,
            message=summary.message,
            observed_generation=workspace.metadata.generation,
        )
        try:
            await apply_status(
                self._kube,
                namespace=workspace.metadata.namespace or "",
                name=workspace.metadata.name or "",
                field_manager=self._settings.service_name,
                status={"conditions": [condition.to_wire()], "state": summary.state.value},
            )
        except errors.KubeError as exc:  # the next change or the resync writes it again
            log.warning("could not write the summary of %s: %s", workspace.metadata.name, exc)
            self._written.pop(key, None)
        else:
            self._written[key] = _Written(workspace.metadata.uid, condition, summary.state)

    # ------------------------------------------------------------------ labelled objects
    async def _follow_children(self, resource: resources.Resource) -> None:
        # With a namespace set, the chart grants Roles there only: a cluster-wide watch of pods
        # would be refused, and would show this watcher objects it has no business seeing.
        namespace = self._settings.namespace if resource.namespaced else None
        async for change in watch(
            self._kube, resource, namespace=namespace, label_selector=WORKSPACE_LABEL
        ):
            await self.on_child(resource, change)

    async def on_child(self, resource: resources.Resource, change: WatchEvent) -> None:
        """Publish ObjectChanged for the Workspace named by the object's labels."""
        meta = change.object["metadata"]
        labels = meta.get("labels") or {}
        namespace = labels.get(WORKSPACE_NAMESPACE_LABEL) or meta.get("namespace")
        key = f"{namespace}/{labels.get(WORKSPACE_LABEL)}"
        uid = meta["uid"]
        fingerprint = None if change.type == "DELETED" else news.object_fingerprint(change.object)
        if fingerprint is None:
            self._published.pop(uid, None)
        elif self._published.get(uid) == fingerprint:
            return  # a heartbeat, or a write of nothing a handler reads
        ref = self._known.get(key)
        if ref is None:
            return  # not (or no longer) a Workspace we watch
        # In the Workspace's rollout trace: a pod failing is part of that rollout's story.
        published = await self._publish(
            ObjectChanged(
                workspace=ref,
                kind=cast(ChildKind, resource.kind),
                object_name=meta["name"],
                object_namespace=meta.get("namespace"),
                object_uid=meta["uid"],
                object_resource_version=meta["resourceVersion"],
                change=change.type,
            ),
            self._rollouts.get(key),
        )
        if published and fingerprint is not None:
            self._published[uid] = fingerprint

    # ------------------------------------------------------------------ resync
    async def _resync_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._settings.resync_interval_s)
            await self.resync()

    async def resync(self) -> None:
        """Publish every Workspace again (JetStream drops it if the same version was just sent)."""
        try:
            listed = await self._kube.list(resources.WORKSPACES, namespace=self._settings.namespace)
        except errors.KubeError as exc:
            log.warning("resync skipped: %s", exc)
            return
        for item in listed.get("items", []):
            item.setdefault("apiVersion", resources.WORKSPACES.api_version)
            item.setdefault("kind", resources.WORKSPACES.kind)
            try:
                workspace = parse_workspace(item)
            except ValidationError:
                continue
            ctx = rollout_trace.context_of(workspace.metadata.annotations)
            token = context.attach(ctx) if ctx is not None else None
            try:
                deleting = workspace.metadata.deletion_timestamp is not None
                await self._publish(
                    WorkspaceObserved(workspace=WorkspaceRef.of(workspace), deleting=deleting)
                )
            finally:
                if token is not None:
                    context.detach(token)

    async def _publish(self, event: Event, rollout: context.Context | None = None) -> bool:
        token = context.attach(rollout) if rollout is not None else None
        try:
            return await self._publish_now(event)
        finally:
            if token is not None:
                context.detach(token)

    async def _publish_now(self, event: Event) -> bool:
        try:
            await self._bus.publish(event)
        except BusError as exc:  # lost for now; the resync publishes the Workspace again
            log.warning(
                "could not publish %s for %s: %s", event.event_name, event.workspace.key, exc
            )
            return False
        return True
