"""The watcher: the only component holding Kubernetes watches.

It keeps the latest trimmed state of every Workspace, of every Node and of every object labelled
`kaito.sh/workspace` on the state stream (kairyu_contracts.objectstate, docs/views.md), from which
the other services build their views: the change of a state is the event that wakes them, so each
hand-off (a status a service wrote) is announced once. A value is written only when what the
services read changed, a tombstone when the object is deleted. At start the watcher reads what the
stream already holds and lists the cluster against it, so a restart publishes only what changed
while it was away, and tombstones what was deleted meanwhile; a state it could not store is tried
again every `resync_interval_s`.

It also publishes, for each Workspace, the objects that hold a name one of the Workspace's
generated objects would take and that the Workspace does not control (`occupancy`): it follows
the names and owners alone (metadata watches) of every ConfigMap, Service and NetworkPolicy, and of
every workload without the Workspace label, so the deployer and the tuner need no GET before a
first apply.

On a bus that keeps no states (Azure Service Bus, issue 20; `StateBus.serves_snapshots`) there
is nothing to read back at start: the watcher keeps every object's value itself, sends each kind's
first snapshot to every reader once the kind is listed (holding back its changes until then),
and answers followers' snapshot requests from what it keeps (docs/bus.md).

It also puts right a summary (`WorkspaceReady`, `status.state`) that the services' own status
writes, each carrying the summary, left stale (kairyu_contracts.api.summary), and records an Event
on a Workspace whose rollout phase runs long (kairyu_watcher.slow_phases).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar, cast

from pydantic import ValidationError

from kairyu_contracts.api import (
    ConditionStatus,
    ConditionType,
    Workspace,
    WorkspaceState,
    parse_workspace,
    summary,
)
from kairyu_contracts.labels import WORKSPACE_LABEL
from kairyu_contracts.objectstate import (
    CLUSTER_SCOPED,
    KINDS,
    Kind,
    ObjectKey,
    content_digest,
    trim,
)
from kairyu_core.bus import BusError, Snapshot, SnapshotValues, StateBus
from kairyu_core.informing import wake_digest
from kairyu_core.kube import (
    JSON,
    KubeClient,
    WatchEvent,
    apply_workspace_status,
    errors,
    resources,
    watch,
)
from kairyu_core.retrying import retry_forever
from kairyu_watcher.occupancy import Occupancy, identity
from kairyu_watcher.settings import WatcherSettings
from kairyu_watcher.slow_phases import SlowPhases

log = logging.getLogger(__name__)

CHILD_RESOURCES = (
    resources.INFERENCESETS,
    resources.MULTIROLEINFERENCES,
    resources.NODES,
    resources.NODECLAIMS,
    resources.DEPLOYMENTS,
    resources.STATEFULSETS,
    resources.JOBS,
    resources.PODS,
)
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "Job"})
NAMED_RESOURCES = (
    resources.CONFIGMAPS,
    resources.SERVICES,
    resources.NETWORKPOLICIES,
    resources.DEPLOYMENTS,
    resources.STATEFULSETS,
    resources.JOBS,
)
"""Whose names and owners are followed for `occupancy`: the kinds that kairyu_contracts.childnames
names."""


class StateStreamReplacedError(Exception):
    """The state stream is not the one this watcher seeded from: start over."""


@dataclass(frozen=True)
class _Written:
    """A summary this watcher wrote: (status, reason, message, generation) and the state."""

    uid: str | None
    said: tuple[ConditionStatus, str, str, int | None]
    state: WorkspaceState


_NAMES_PATIENCE_S = 60.0  # lists of names not done by then: say why Workspaces wait
_WRITTEN_LIMIT = 50_000  # Workspaces remembered; forgetting one costs at most one repeated write
_T = TypeVar("_T")


class Watcher:
    """Follows the cluster and keeps its state on NATS."""

    def __init__(self, *, settings: WatcherSettings, bus: StateBus, kube: KubeClient) -> None:
        self._settings = settings
        self._bus = bus
        self._kube = kube
        # namespace/name -> the summary this watcher last wrote, until an event shows it
        self._written: dict[str, _Written] = {}
        # namespace/name -> (uid, generation) seen WorkspaceReady=True: its outcome is recorded
        self._finished: dict[str, tuple[str | None, int | None]] = {}
        # object -> digest of the state on the stream (kairyu_contracts.objectstate.content_digest)
        self._stored: dict[ObjectKey, str] = {}
        # object -> a state (None: a tombstone), its digest and uid, whose publish failed; the
        # resync tries again
        self._unsent: dict[ObjectKey, tuple[JSON | None, str | None, str | None]] = {}
        # kind -> namespace/name -> the state stored at start (the first list is diffed to it)
        self._seeded: dict[str, dict[str, JSON]] = {}
        self._occupancy = Occupancy()
        self._listed: list[asyncio.Event] = []  # one per watch: its first list was handled
        self._publishing = asyncio.Lock()  # one Occupant publication at a time, in order
        self._slow = SlowPhases(settings.slow_phases, kube=kube, component=settings.service_name)
        # On a bus that keeps no states (Service Bus) the watcher is where followers' snapshots
        # come from: it keeps every object's value, and holds back each kind's changes until
        # that kind's first snapshot went to every reader (docs/bus.md).
        self._snapshots = bus.serves_snapshots
        self._values: SnapshotValues = {}
        self._held: set[Kind] = set()
        self._first_lists: dict[Kind, tuple[asyncio.Event, asyncio.Event]] = {}
        self._occupants_settled = asyncio.Event()

    async def run(self) -> None:
        """Watch and resync until cancelled; start over if the state stream was replaced."""
        while True:
            await self._bus.wait_for_streams()  # a replaced stream: until the set-up recreates it
            self._stored.clear()
            self._unsent.clear()
            self._seeded.clear()
            self._occupancy = Occupancy()
            self._listed = []
            self._values.clear()
            self._held = set(KINDS) if self._snapshots else set()
            self._first_lists = {}
            self._occupants_settled = asyncio.Event()
            stream = await self._bus.state_stream_identity()
            if not self._snapshots:  # a bus that keeps no states has nothing to seed from
                await self._seed()
            try:
                async with asyncio.TaskGroup() as tasks:
                    for resource in CHILD_RESOURCES:
                        # Only the lists that feed the Occupants are waited for (a kind whose
                        # API is not served, NodeClaims without Karpenter, never lists).
                        listed = self._new_listed() if resource.kind in WORKLOAD_KINDS else None
                        listed, unavailable = self._first_list(cast(Kind, resource.kind), listed)
                        tasks.create_task(self._follow_children(resource, listed, unavailable))
                    for resource in NAMED_RESOURCES:
                        tasks.create_task(self._follow_names(resource, self._new_listed()))
                    names = list(self._listed)
                    workspaces, _ = self._first_list("Workspace", self._new_listed())
                    assert workspaces is not None  # noqa: S101 - given one
                    tasks.create_task(self._follow_workspaces(names, workspaces))
                    tasks.create_task(self._sweep_occupants())
                    tasks.create_task(self._resync_periodically(stream))
                    tasks.create_task(self._slow.run())
                    if self._snapshots:
                        tasks.create_task(self._send_snapshots())
            except* StateStreamReplacedError:
                # Deleted and created again (by hand, or a NATS without persistent storage):
                # what this watcher believes stored is gone, so it publishes everything again.
                log.warning("the state stream was replaced; publishing every state again")

    async def _seed(self) -> None:
        """Learn what the state stream holds, so the first lists publish only differences.

        Each kind's watch starts from a list diffed against these values: what changed while
        this watcher was away is published, what was deleted meanwhile gets its tombstone, and
        what is unchanged is not sent again.
        """
        namespace = self._settings.namespace
        kinds = [
            (resource, cast(Kind, resource.kind) if resource is not None else "Occupant")
            for resource in (resources.WORKSPACES, *CHILD_RESOURCES, None)
        ]
        # All at once: a kind with no states ends its snapshot only after a poll interval
        # without messages, so reading them one after the other delayed the first watch (and
        # every plan after a start) by that interval per kind.
        async with asyncio.TaskGroup() as tasks:
            reads = [tasks.create_task(self._snapshot(kind)) for _, kind in kinds]
        for (resource, kind), read in zip(kinds, reads, strict=True):
            first = read.result()
            self._stored.update(first.digests)
            if resource is None:
                continue  # Occupants are computed again; `_sweep_occupants` removes the stale
            self._seeded[resource.kind] = {
                f"{'' if key.namespace == CLUSTER_SCOPED else key.namespace}/{key.name}": value
                for key, value in first.values.items()
                # A watcher of one namespace lists only that one: others' objects are not gone.
                if namespace is None or not resource.namespaced or key.namespace == namespace
            }
            # The first lists yield only what changed since: what they will not repeat is what
            # the occupancy starts from.
            for path, value in self._seeded[resource.kind].items():
                if kind == "Workspace":
                    self._occupancy.workspace_changed(value, deleted=False)
                    self._slow.workspace_changed(path, value, deleted=False)
                elif kind in WORKLOAD_KINDS:
                    self._occupancy.object_changed(kind, value, deleted=False, source="labelled")

    async def _snapshot(self, kind: Kind) -> Snapshot:
        """What the state stream holds of `kind` now."""
        follow = self._bus.follow_state(kind)
        try:
            first = await anext(follow)
        finally:
            await follow.aclose()
        if not isinstance(first, Snapshot):  # pragma: no cover - follow starts with one
            raise TypeError("the state stream's first item is not a snapshot")
        return first

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
        wake = None
        if value is not None:
            digest = digest or content_digest(value)
            # What wakes a service, hashed here once rather than by every service.
            wake = wake_digest(key.kind, value, content=digest)
        if self._snapshots:
            if value is None or digest is None:
                self._values.pop(key, None)
            else:
                self._values[key] = (value, digest, wake)
            if key.kind in self._held:  # the kind's first snapshot will carry it
                self._unsent.pop(key, None)
                if value is not None and digest is not None:
                    self._stored[key] = digest
                return
        try:
            if value is None:
                await self._bus.delete_state(key, uid=uid)
            else:
                assert digest is not None  # noqa: S101 - computed above
                await self._bus.put_state(key, value, digest=digest, wake=wake)
        except BusError as exc:  # kept for the resync's next round
            log.warning("could not store the state of %s %s: %s", key.kind, key.path, exc)
            self._unsent[key] = (value, digest, uid)
            return
        self._unsent.pop(key, None)
        if value is not None and digest is not None:
            self._stored[key] = digest

    async def _send_unsent(self) -> None:
        for key, (value, digest, uid) in list(self._unsent.items()):
            if key.kind != "Occupant":  # those are settled from what holds now
                await self._send(key, value, digest, uid=uid)

    # ------------------------------------------------------------------ Workspaces
    async def _follow_workspaces(self, names: list[asyncio.Event], listed: asyncio.Event) -> None:
        """Follow the Workspaces once every name held in the cluster is known.

        A Workspace published before the names are listed could reach the deployer while the
        Occupant of a name someone else holds is not yet on the stream, and its object would
        be taken over; so the Workspaces wait (the services keep the views they have). Names
        that cannot be listed (rights missing) keep them waiting, loudly.
        """
        listed_names = asyncio.gather(*(event.wait() for event in names))
        try:
            done, _ = await asyncio.wait([listed_names], timeout=_NAMES_PATIENCE_S)
            if not done:
                log.error(
                    "the names of ConfigMaps, Services, NetworkPolicies and workloads are not "
                    "listed after %.0f s (see the warnings above; the watcher needs list and watch "
                    "on them): no Workspace is followed until they are",
                    _NAMES_PATIENCE_S,
                )
                await listed_names
        finally:
            listed_names.cancel()  # a no-op once done; on shutdown, no waiter left behind
        workspaces = watch(
            self._kube,
            resources.WORKSPACES,
            namespace=self._settings.namespace,
            known=self._seeded.pop(resources.WORKSPACES.kind, None),
            remember=functools.partial(trim, "Workspace"),
            listed=listed,
        )
        async with contextlib.aclosing(workspaces) as changes:
            async for change in changes:
                # Its names' Occupants are stored before the Workspace's own state.
                deleted = change.type == "DELETED"
                changed = self._occupancy.workspace_changed(change.object, deleted=deleted)
                await self._publish(key for key, _ in changed)
                await self._store("Workspace", change)
                await self.on_workspace(change)

    async def on_workspace(self, change: WatchEvent) -> None:
        """Correct the summary if the services' writes left it stale."""
        try:
            workspace = parse_workspace(change.object)
        except ValidationError:
            # The CRD admitted it, so only a newer, incompatible CRD gets here: say so, go on.
            log.exception("cannot read Workspace %s; skipping it", change.key)
            return
        self._slow.workspace_changed(change.key, change.object, deleted=change.type == "DELETED")
        if change.type == "DELETED":
            self._written.pop(change.key, None)
            self._finished.pop(change.key, None)
            return
        await self._write_summary(change.key, change.object, workspace)

    async def _write_summary(self, key: str, raw: JSON, workspace: Workspace) -> None:
        """Write the summary if it is not what the Workspace's conditions say.

        Each service writes the summary with its own status write; two writing at once, each
        from its own view, can leave one that is stale, and this puts it right.
        """
        meta, status = workspace.metadata, workspace.status
        current = {c.type: c for c in (status.conditions if status else None) or []}
        if not any(c.observed_generation == meta.generation for c in current.values()):
            # No service has written about this generation yet (a new Workspace, or an edit):
            # the planner's first write carries the summary; one from here would race it.
            return
        wanted = summary.summarize(workspace)
        ready = current.get(ConditionType.WORKSPACE_READY)
        said = (wanted.status, wanted.reason, wanted.message, meta.generation)
        rollout = (meta.uid, meta.generation)
        ended = (
            ready is not None
            and ready.status == ConditionStatus.TRUE
            and ready.observed_generation == meta.generation
        ) or (status is not None and status.state == WorkspaceState.FAILED)
        if ended:
            self._remember(self._finished, key, rollout)  # its outcome is recorded already
        if (
            ready is not None
            and (ready.status, ready.reason, ready.message, ready.observed_generation) == said
            and status is not None
            and status.state == wanted.state
        ):
            self._written.pop(key, None)  # right as it is: whatever comes next is news
            return
        written = self._written.get(key)
        if written is not None and written == _Written(meta.uid, said, wanted.state):
            # This watcher wrote exactly that, and the event predates the write.
            return
        try:
            await apply_workspace_status(
                self._kube,
                live=raw,
                status={},
                field_manager=self._settings.service_name,
                # A summary put back to Ready after a stale write hid it: the rollout ended
                # earlier, and its outcome was recorded then.
                record=self._finished.get(key) != rollout,
            )
        except errors.KubeError as exc:  # the Workspace's next change writes it again
            log.warning("could not write the summary of %s: %s", workspace.metadata.name, exc)
            self._written.pop(key, None)
            return
        self._remember(self._written, key, _Written(meta.uid, said, wanted.state))

    @staticmethod
    def _remember(memory: dict[str, _T], key: str, value: _T) -> None:
        memory.pop(key, None)
        memory[key] = value
        if len(memory) > _WRITTEN_LIMIT:
            del memory[next(iter(memory))]

    # ------------------------------------------------------------------ labelled objects
    async def _follow_children(
        self,
        resource: resources.Resource,
        listed: asyncio.Event | None,
        unavailable: asyncio.Event | None = None,
    ) -> None:
        # With a namespace set, the chart grants Roles there only: a cluster-wide watch of pods
        # would be refused, and would show this watcher objects it has no business seeing.
        namespace = self._settings.namespace if resource.namespaced else None
        # Every Node, not only labelled ones: the byo backend chooses among existing GPU nodes by
        # the Workspace's own labelSelector, so the provisioner's view must hold them all. A
        # node's heartbeats do not change its trimmed state, so they are not published.
        # InferenceSets and MultiRoleInferences are the users' own objects, followed whole like
        # Workspaces.
        unlabelled = (resources.NODES, resources.INFERENCESETS, resources.MULTIROLEINFERENCES)
        selector = None if resource in unlabelled else WORKSPACE_LABEL
        children = watch(
            self._kube,
            resource,
            namespace=namespace,
            label_selector=selector,
            known=self._seeded.pop(resource.kind, None),
            # What is kept of each object is what the stream holds of it: enough to tombstone it.
            remember=functools.partial(trim, cast(Kind, resource.kind)),
            listed=listed,
            unavailable=unavailable,
        )
        # Closed when this task stops (cancelled mid-event too): its connection with it.
        async with contextlib.aclosing(children) as changes:
            async for change in changes:
                await self._store(cast(Kind, resource.kind), change)
                if resource.kind in WORKLOAD_KINDS:
                    await self._name_changed(resource.kind, change, source="labelled")

    # ------------------------------------------------------------------ snapshots
    def _first_list(
        self, kind: Kind, listed: asyncio.Event | None
    ) -> tuple[asyncio.Event | None, asyncio.Event | None]:
        """The events a kind's watch sets: listed (`listed`, or a new one) and unavailable.

        Only when the watcher sends snapshots: a kind's first snapshot waits for its first list,
        or for the news that its API is not served (then the snapshot is empty, as the NATS
        stream's would be, and the kind's objects come as changes once it is served).
        """
        if not self._snapshots:
            return listed, None
        events = (listed or asyncio.Event(), asyncio.Event())
        self._first_lists[kind] = events
        return events

    def _values_of(self, kind: Kind) -> SnapshotValues:
        return {key: held for key, held in self._values.items() if key.kind == kind}

    def _release(self, kind: Kind) -> SnapshotValues:
        """The kind's values for its first snapshot; from now on its changes are sent.

        The bus calls this when the snapshot's turn to be sent comes, with the kind's sends
        held back until it is out, so no change can overtake the snapshot that predates it.
        """
        self._held.discard(kind)
        return self._values_of(kind)

    async def _send_snapshots(self) -> None:
        """Each kind's first snapshot to every reader once it is known, then answer requests.

        A reader's view is replaced by it, so what was deleted while this watcher was away is
        dropped; requests are answered only once every kind's snapshot is whole.
        """

        async def one(kind: Kind) -> None:
            if kind == "Occupant":
                await self._occupants_settled.wait()
            else:
                listed, unavailable = self._first_lists[kind]
                waits = [asyncio.ensure_future(e.wait()) for e in (listed, unavailable)]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for wait in waits:
                        wait.cancel()
            # A bus unreachable for longer than its own retries must not end the watcher: the
            # readers wait for this snapshot, so it is tried until it is out.
            await retry_forever(f"sending the first {kind} snapshot", on=BusError)(
                self._bus.broadcast_snapshot, kind, self._release
            )
            log.info("sent the first snapshot of %s to every reader", kind)

        async with asyncio.TaskGroup() as tasks:
            for kind in KINDS:
                tasks.create_task(one(kind))
        await self._bus.serve_snapshots(self._values_of)

    # ------------------------------------------------------------------ names held
    def _new_listed(self) -> asyncio.Event:
        listed = asyncio.Event()
        self._listed.append(listed)
        return listed

    async def _follow_names(self, resource: resources.Resource, listed: asyncio.Event) -> None:
        """Follow the names and owners of `resource`'s objects, for the Occupants."""
        namespace = self._settings.namespace if resource.namespaced else None
        # Labelled workloads come whole through `_follow_children`; the rest by name only.
        workload = resource.kind in WORKLOAD_KINDS
        names = watch(
            self._kube,
            resource,
            namespace=namespace,
            label_selector=f"!{WORKSPACE_LABEL}" if workload else None,
            metadata_only=True,
            remember=identity,
            listed=listed,
        )
        async with contextlib.aclosing(names) as changes:
            async for change in changes:
                await self._name_changed(resource.kind, change, source="names")

    async def _name_changed(self, kind: str, change: WatchEvent, *, source: str) -> None:
        deleted = change.type == "DELETED"
        changed = self._occupancy.object_changed(
            kind, change.object, deleted=deleted, source=source
        )
        await self._publish(key for key, _ in changed)

    async def _sweep_occupants(self) -> None:
        """Once every watch has listed, bring every Occupant on the stream in line."""
        await asyncio.gather(*(listed.wait() for listed in self._listed))
        await self._settle_occupants()
        self._occupants_settled.set()

    async def _settle_occupants(self) -> None:
        """Store what holds now and tombstone what does not, for every Occupant there is or was.

        At start this removes those stored before that hold no more, and stores those found
        while seeding; at each resync it puts right anything a failed publish left behind.
        """
        mine = self._settings.namespace
        keys = {
            key
            for key in (*self._stored, *self._unsent)
            if key.kind == "Occupant" and (mine is None or key.namespace == mine)
        }
        await self._publish(sorted(keys | self._occupancy.current()))

    async def _publish(self, keys: Iterable[ObjectKey]) -> None:
        """Bring the stream in line with the Occupants of these keys as they are now.

        Several watches change Occupants at once, and a publication waits for its ack: so the
        value is read again under a lock when its turn comes, and whichever publication runs
        last stores what holds then, never a value a later change has replaced.

        The stream drops a message whose id it saw within its duplicate window; an Occupant has
        no resourceVersion, so each publication gets a random one (which its content digest
        leaves out), and each tombstone a random uid: one that comes back, goes and comes back
        again is stored each time, while a retry of the same publication is stored once.
        """
        async with self._publishing:
            for key in keys:
                value = self._occupancy.value(key)
                if value is None:
                    stored = self._stored.pop(key, None) is not None
                    if self._unsent.pop(key, None) is not None or stored:
                        await self._send(key, None, None, uid=uuid.uuid4().hex)
                    continue
                digest = content_digest(value)
                if self._stored.get(key) != digest:
                    meta = {**value["metadata"], "resourceVersion": uuid.uuid4().hex}
                    await self._send(key, {**value, "metadata": meta}, digest)

    # ------------------------------------------------------------------ resync
    async def _resync_periodically(self, stream: str | None) -> None:
        while True:
            await asyncio.sleep(self._settings.resync_interval_s)
            try:
                now = await self._bus.state_stream_identity()
            except BusError as exc:  # NATS away: nothing to conclude
                log.info("cannot check the state stream now: %s", exc)
                now = stream
            if now != stream:
                raise StateStreamReplacedError
            await self.resync()

    async def resync(self) -> None:
        """Store again the states whose publish failed (NATS was away), Occupants included."""
        await self._send_unsent()
        await self._settle_occupants()
