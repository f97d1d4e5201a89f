"""Server-side apply that never lands on an object the Workspace does not own.

The deployer and the tuner create their children under deterministic names, so a stranger's object
of the same name must be reported, not taken over: a forced apply would add our owner reference to
it, and garbage collection would later delete it with the Workspace.
"""

from __future__ import annotations

from kairyu_core.kube import errors
from kairyu_core.kube.client import JSON, KubeClient
from kairyu_core.kube.resources import Resource
from kairyu_core.workloads import KnownChildren, Owner, check_owned


async def apply_owned(
    kube: KubeClient,
    resource: Resource,
    obj: JSON,
    *,
    owner: Owner,
    children: KnownChildren,
    field_manager: str,
) -> JSON:
    """Apply `obj` for `owner`; raises workloads.NameTakenError when someone else owns its name.

    The first time, the object is read; afterwards it is applied with the uid the last apply
    returned, which the apiserver holds immutable: an object replaced by a stranger's of the same
    name fails the apply (422) instead of being taken over, and is then read again, once.
    """
    kind, name = obj["kind"], obj["metadata"]["name"]
    known = children.uid(owner, kind, name)
    if known is None:
        try:
            current = await kube.get(resource, name, namespace=owner.namespace)
        except errors.NotFoundError:
            pass
        else:
            check_owned(current, owner)
            known = current["metadata"]["uid"]
    body = {**obj, "metadata": {**obj["metadata"], **({"uid": known} if known else {})}}
    try:
        applied = await kube.apply(resource, body, field_manager=field_manager)
    except (errors.InvalidError, errors.ConflictError):
        # With a remembered uid: 422 when the object was replaced since, 409 when it is gone.
        if children.uid(owner, kind, name) is None:
            raise
        children.forget(owner, kind, name)
        return await apply_owned(
            kube, resource, obj, owner=owner, children=children, field_manager=field_manager
        )
    children.remember(owner, kind, name, applied["metadata"]["uid"])
    return dict(applied)
