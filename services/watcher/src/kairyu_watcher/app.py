"""The watcher: the only component holding Kubernetes watches.

It keeps the latest trimmed state of every Workspace and of every object labelled
`kaito.sh/workspace` on the state stream (kairyu_core.objectstate), from which the other
services build their views; it writes a value only when what the services read changed, and a
tombstone when the object is deleted. At start it reads what the stream already holds and lists
the cluster against it, so a restart publishes only what changed while it was away, and
tombstones what was deleted meanwhile.

It also turns Workspace changes into WorkspaceObserved / WorkspaceDeleted and labelled objects'
changes into ObjectChanged, re-publishes every Workspace on a resync interval, starts each
generation's rollout trace, and writes the summary (`WorkspaceReady`, `status.state`).
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
from kairyu_core.bus import Bus, BusError, Snapshot
from kairyu_core.events import (
    Event,
    ObjectChanged,
    WorkspaceDeleted,
    WorkspaceObserved,
    WorkspaceRef,
)
from kairyu_core.kube import JSON, KubeClient, WatchEvent, apply_status, errors, resources, watch
from kairyu_core.objectstate import CLUSTER_SCOPED, Kind, ObjectKey, content_digest, trim
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
        # object -> digest of the state on the stream (kairyu_core.objectstate.content_digest)
        self._stored: dict[ObjectKey, str] = {}
        # object -> a state (None: a tombstone) whose publish failed; the resync tries again
        self._unsent: dict[ObjectKey, tuple[JSON | None, str | None]] = {}
        # kind -> namespace/name -> the state stored at start (the first list is diffed to it)
        self._seeded: dict[str, dict[str, JSON]] = {}

    async def run(self) -> None:
        """Watch and resync until cancelled."""
        await self._bus.ensure_stream()
        await self._seed()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._follow_workspaces())
            for resource in CHILD_RESOURCES:
                tasks.create_task(self._follow_children(resource))
            tasks.create_task(self._resync_periodically())

    async def _seed(self) -> None:
        """Learn what the state stream holds, so the first list publishes only differences."""
        for resource in (resources.WORKSPACES, *CHILD_RESOURCES):
            kind = cast(Kind, resource.kind)
            follow = self._bus.follow_state(kind)
            try:
                first = await anext(follow)
            finally:
                await follow.aclose()
            if not isinstance(first, Snapshot):  # pragma: no cover - follow starts with one
                raise TypeError("the state stream's first item is not a snapshot")
            self._stored.update(first.digests)
            if resource is resources.WORKSPACES:
                await self._tombstone_vanished_workspaces(first)
                continue  # every Workspace goes through on_workspace at start, as before
            self._seeded[resource.kind] = {
                f"{'' if key.namespace == CLUSTER_SCOPED else key.namespace}/{key.name}": value
                for key, value in first.values.items()
            }

    async def _tombstone_vanished_workspaces(self, stored: Snapshot) -> None:
        """Workspaces on the stream but no longer in the cluster were deleted while away."""
        if not stored.values:
            return
        try:
            listed = await self._kube.list(resources.WORKSPACES, namespace=self._settings.namespace)
        except errors.KubeError as exc:  # they stay until the next start; the services confirm
            log.warning("could not look for Workspaces deleted while away: %s", exc)
            return
        live = {ObjectKey.of("Workspace", item) for item in listed.get("items") or []}
        for key, value in stored.values.items():
            if key not in live and (
                self._settings.namespace is None or key.namespace == self._settings.namespace
            ):
                self._stored.pop(key, None)
                await self._send(key, None, None, uid=(value.get("metadata") or {}).get("uid"))

    async def _store(self, kind: Kind, change: WatchEvent) -> None:
        """Bring the object's state on the stream up to date with this change."""
        key = ObjectKey.of(kind, change.object)
        if change.type == "DELETED":
            stored = self._stored.pop(key, None) is not None
            if not stored and self._unsent.pop(key, None) is None:
                return  # never stored, nothing to tombstone
            await self._send(key, None, None, uid=change.object["metadata"].get("uid"))
            return
        value = trim(kind, change.object)
        digest = content_digest(value)
        if self._stored.get(key) == digest:
            return  # a heartbeat, or a write of nothing any service reads
        await self._send(key, value, digest)

    async def _send(
        self, key: ObjectKey, value: JSON | None, digest: str | None, *, uid: str | None = None
    ) -> None:
        try:
            if value is None:
                await self._bus.delete_state(key, uid=uid)
            else:
                await self._bus.put_state(key, value, digest=digest or content_digest(value))
        except BusError as exc:  # kept for the resync's next round
            log.warning("could not store the state of %s %s: %s", key.kind, key.path, exc)
            self._unsent[key] = (value, digest)
            return
        self._unsent.pop(key, None)
        if value is not None and digest is not None:
            self._stored[key] = digest

    async def _send_unsent(self) -> None:
        for key, (value, digest) in list(self._unsent.items()):
            uid = None if value is None else (value.get("metadata") or {}).get("uid")
            await self._send(key, value, digest, uid=uid)

    # ------------------------------------------------------------------ Workspaces
    async def _follow_workspaces(self) -> None:
        async for change in watch(
            self._kube,
            resources.WORKSPACES,
            namespace=self._settings.namespace,
            known=self._seeded.pop(resources.WORKSPACES.kind, None),
        ):
            await self._store("Workspace", change)
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
            self._kube,
            resource,
            namespace=namespace,
            label_selector=WORKSPACE_LABEL,
            known=self._seeded.pop(resource.kind, None),
        ):
            await self._store(cast(Kind, resource.kind), change)
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
        """Publish every Workspace again (JetStream drops it if the same version was just sent).

        States whose publish failed are sent again first.
        """
        await self._send_unsent()
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
