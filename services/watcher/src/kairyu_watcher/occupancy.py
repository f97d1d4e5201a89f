"""Which objects hold the names a Workspace's generated objects would take (pure).

The deployer and the tuner must never take over an object of someone else's that happens to
carry the name they would give theirs (kairyu_contracts.childnames): a forced apply would add their
owner reference, and the garbage collector would later delete it with the Workspace. Instead of
a GET before each first apply, the watcher follows the names and owners of every object of those
kinds and publishes, for each Workspace, an `Occupant` state (kairyu_contracts.objectstate) per name
that an object the Workspace does not control holds. Its tombstone, when that object goes or the
Workspace is deleted, wakes the Workspace again.

`Occupancy` keeps what it needs for that (each object's uid and controller, each Workspace's uid)
and answers each change with the Occupant states to publish: new ones, changed ones, and None for
those that no longer hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from kairyu_contracts.childnames import child_names, claimants
from kairyu_contracts.objectstate import JSON, ObjectKey, occupant, occupant_key
from kairyu_contracts.workloads import controller_uid

Change = tuple[ObjectKey, JSON | None]


@dataclass(frozen=True)
class Holder:
    """The object holding a name: its uid and its controller's uid (None: no controller)."""

    uid: str
    controller: str | None

    @classmethod
    def of(cls, obj: JSON) -> Holder:
        return cls(str(obj["metadata"].get("uid") or ""), controller_uid(obj))


def identity(obj: JSON) -> JSON:
    """What a metadata watch keeps of an object: enough to tell it again and to name it."""
    meta = obj.get("metadata") or {}
    refs = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
    kept = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta}
    if refs:
        kept["ownerReferences"] = refs
    return {"metadata": kept}


class Occupancy:
    """The holders of the names Workspaces' objects take, and the Occupants they make."""

    def __init__(self) -> None:
        # (kind, namespace, name) -> source -> holder. An object can be reported by two watches
        # (a workload with the Workspace label and one without) while its label changes, and
        # their events come in any order; the name is held while any source reports it.
        self._holders: dict[tuple[str, str, str], dict[str, Holder]] = {}
        self._workspaces: dict[tuple[str, str], str] = {}  # (namespace, name) -> uid
        self._occupants: dict[ObjectKey, JSON] = {}  # what the Workspaces' names hold now

    def object_changed(self, kind: str, obj: JSON, *, deleted: bool, source: str) -> list[Change]:
        """The object `obj` of `kind` (reported by the watch `source`) changed or is gone."""
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        key = (kind, namespace, name)
        sources = self._holders.get(key, {})
        if deleted:
            sources.pop(source, None)
        else:
            sources[source] = Holder.of(obj)
        if sources:
            self._holders[key] = sources
        else:
            self._holders.pop(key, None)
        changes: list[Change] = []
        for workspace in claimants(kind, name):
            if (namespace, workspace) in self._workspaces:
                changes += self._settle(namespace, workspace, kind, name)
        return changes

    def workspace_changed(self, obj: JSON, *, deleted: bool) -> list[Change]:
        """The Workspace `obj` appeared, changed or is gone."""
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        uid = str(meta.get("uid") or "")
        if deleted:
            self._workspaces.pop((namespace, name), None)
        elif self._workspaces.get((namespace, name)) == uid:
            return []  # the same Workspace: its names are held as they were
        else:
            self._workspaces[(namespace, name)] = uid
        changes: list[Change] = []
        for kind, child in child_names(name):
            changes += self._settle(namespace, name, kind, child)
        return changes

    def current(self) -> set[ObjectKey]:
        """The keys of every Occupant there is now."""
        return set(self._occupants)

    def value(self, key: ObjectKey) -> JSON | None:
        """The Occupant `key` as it is now (None: the name is free, or not watched at all)."""
        return self._occupants.get(key)

    def _settle(self, namespace: str, workspace: str, kind: str, name: str) -> list[Change]:
        key = occupant_key(namespace, workspace, kind, name)
        owner = self._workspaces.get((namespace, workspace))
        sources = self._holders.get((kind, namespace, name)) or {}
        # Two sources disagree only for a moment (an object deleted and made again under the
        # same name): a name is free only when no source reports a stranger holding it.
        holder = next((h for h in sources.values() if h.controller != owner), None)
        wanted = None
        if owner is not None and holder is not None:
            wanted = occupant(
                namespace, workspace, kind, name, uid=holder.uid, controller=holder.controller
            )
        if self._occupants.get(key) == wanted:
            return []
        if wanted is None:
            del self._occupants[key]
        else:
            self._occupants[key] = wanted
        return [(key, wanted)]
