"""Server-side apply that never lands on an object the Workspace does not own.

The deployer and the tuner create their children under deterministic names, so a stranger's object
of the same name must be reported, not taken over: a forced apply would add our owner reference to
it, and garbage collection would later delete it with the Workspace. Whether a name is a
stranger's comes from the view (the watcher's Occupants, `check_free`), not from a GET before each
first apply; the apiserver is read only when an object the service applied was replaced since.

A service that reconciles from its view also needs to know, without reading anything back,
whether what it would apply is already applied: `applied_digest` hashes every object it would
apply for a Workspace, and `stamped` records that hash in an annotation of the workload, whose
trimmed state (annotations kept, pod template dropped) the view holds.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
from collections.abc import Sequence

from kairyu_contracts.objectstate import occupant_key
from kairyu_contracts.workloads import KnownChildren, Owner, check_owned, name_taken
from kairyu_core.kube import errors, resources
from kairyu_core.kube.client import JSON, KubeClient
from kairyu_core.kube.resources import Resource
from kairyu_core.view import View

log = logging.getLogger(__name__)

APPLIED_DIGEST_ANNOTATION = "kairyu.io/applied-digest"
"""On a Workspace's workload (Deployment, StatefulSet, Job): the digest of every object the
service applied for the Workspace, the workload included (less this annotation)."""


def applied_digest(objects: Sequence[JSON]) -> str:
    """A short, stable hash of the objects a service would apply (in order)."""
    text = json.dumps(list(objects), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamped(workload: JSON, digest: str) -> JSON:
    """A copy of `workload` carrying `digest` in its applied-digest annotation."""
    out = copy.deepcopy(workload)
    annotations = out["metadata"].setdefault("annotations", {})
    annotations[APPLIED_DIGEST_ANNOTATION] = digest
    return out


def digest_of(obj: JSON | None) -> str | None:
    """The applied-digest annotation of `obj` (a view's trimmed workload), if any."""
    if obj is None:
        return None
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(APPLIED_DIGEST_ANNOTATION)
    return str(value) if value is not None else None


def check_free(view: View, objects: Sequence[JSON], owner: Owner) -> None:
    """Raise NameTakenError if the view holds an Occupant for any of `objects`' names.

    The watcher publishes one for each name of a Workspace's generated objects that an object
    the Workspace does not control holds (kairyu_contracts.objectstate). Checked for all objects
    before any is applied, so a taken name leaves nothing half made.
    """
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if view.get(occupant_key(owner.namespace, owner.name, kind, name)) is not None:
            raise name_taken(kind, owner.namespace, name, owner)


async def apply_owned(
    kube: KubeClient,
    resource: Resource,
    obj: JSON,
    *,
    owner: Owner,
    children: KnownChildren,
    field_manager: str,
) -> JSON:
    """Apply `obj` for `owner`, whose name `check_free` found free in the view.

    Once applied, it is applied with the uid the last apply returned, which the apiserver holds
    immutable: an object replaced since by a stranger's of the same name fails the apply (422),
    and only then is it read, once, to tell a stranger's (NameTakenError) from the Workspace's.
    """
    kind, name = obj["kind"], obj["metadata"]["name"]
    known = children.uid(owner, kind, name)
    try:
        applied = await kube.apply(resource, _with_uid(obj, known), field_manager=field_manager)
    except (errors.InvalidError, errors.ConflictError):
        # With a remembered uid: 422 when the object was replaced since, 409 when it is gone.
        if known is None:
            raise
        children.forget(owner, kind, name)
        try:
            current = await kube.get(resource, name, namespace=owner.namespace)
        except errors.NotFoundError:
            known = None
        else:
            check_owned(current, owner)
            known = current["metadata"]["uid"]
        applied = await kube.apply(resource, _with_uid(obj, known), field_manager=field_manager)
    children.remember(owner, kind, name, applied["metadata"]["uid"])
    return dict(applied)


def _with_uid(obj: JSON, uid: str | None) -> JSON:
    if uid is None:
        return obj
    return {**obj, "metadata": {**obj["metadata"], "uid": uid}}


class GoingConfirmation:
    """`confirmed_going`, asked once per Workspace uid: a deletion, once confirmed, stays so."""

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube
        self._going: set[str] = set()

    async def __call__(self, namespace: str, name: str, uid: str) -> bool:
        if uid in self._going:
            return True
        if await confirmed_going(self._kube, namespace, name, uid):
            self._going.add(uid)
            return True
        log.warning("the view says %s/%s is being deleted, the apiserver does not", namespace, name)
        return False

    async def of(self, raw: JSON) -> bool:
        """Whether the view's Workspace `raw` is being deleted, confirmed by the apiserver."""
        meta = raw["metadata"]
        if not meta.get("deletionTimestamp"):
            return False
        return await self(meta.get("namespace") or "", meta["name"], meta.get("uid") or "")


async def confirmed_going(kube: KubeClient, namespace: str, name: str, uid: str) -> bool:
    """Whether the apiserver agrees that the Workspace `uid` is being deleted, or is gone.

    A service's view comes from the state stream, which only the watcher may write; before a
    service deletes what a Workspace owns because its view says the Workspace is going, it asks
    the apiserver, so that a forged or stale state cannot free a live Workspace's nodes or stop
    its workload. One GET, on a path taken once per deletion.
    """
    try:
        live = await kube.get(resources.WORKSPACES, name, namespace=namespace)
    except errors.NotFoundError as exc:
        # The object's own 404 only: one for the resource type (the CRD not served yet) says
        # nothing about this Workspace.
        return exc.names(resources.WORKSPACES.plural, name)
    meta = live.get("metadata") or {}
    return meta.get("uid") != uid or bool(meta.get("deletionTimestamp"))


def owner_of(raw: JSON) -> Owner:
    """The Workspace `raw` (as a view holds it) as the owner of its objects."""
    meta = raw["metadata"]
    return Owner(
        namespace=meta.get("namespace") or "",
        name=meta.get("name") or "",
        uid=meta.get("uid") or "",
        api_version=raw.get("apiVersion") or resources.WORKSPACES.api_version,
        kind=raw.get("kind") or resources.WORKSPACES.kind,
    )


class OnceDeleter:
    """Deletes an object by uid precondition (that object, no other), once per uid.

    A service that reconciles from its view sees an object it deleted until the watcher
    publishes the deletion; until then this remembers the uid, so the DELETE is not sent again.
    Bounded: past `limit` uids the oldest is forgotten, which costs one DELETE answered 404.
    """

    def __init__(self, kube: KubeClient, *, limit: int = 10_000) -> None:
        self._kube = kube
        self._limit = limit
        self._deleted: dict[str, None] = {}

    async def __call__(
        self, resource: Resource, obj: JSON, *, propagation: str | None = None
    ) -> None:
        """Delete `obj` unless it is already going or this process deleted it already."""
        meta = obj["metadata"]
        uid = meta["uid"]
        if meta.get("deletionTimestamp") or uid in self._deleted:
            return
        body: JSON = {"preconditions": {"uid": uid}}
        if propagation is not None:
            body["propagationPolicy"] = propagation
        with contextlib.suppress(errors.NotFoundError, errors.ConflictError):
            await self._kube.request(
                "DELETE", resource.path(namespace=meta["namespace"], name=meta["name"]), body=body
            )
        self._deleted[uid] = None
        if len(self._deleted) > self._limit:
            del self._deleted[next(iter(self._deleted))]
