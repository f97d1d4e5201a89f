"""A service's in-memory view of the cluster: the latest state of each object it follows.

Fed from the state stream on NATS (kairyu_core.informing), never from the apiserver: reconcile
logic reads the Workspace and the objects labelled with it from here, so handling a change costs
no GET or LIST. Indexed by Workspace, because every reconcile asks "this Workspace and what
belongs to it".

Each change says which Workspaces it concerns (the object's own, and the one it belonged to before
if its labels moved), so the caller can enqueue exactly those keys. Pure and synchronous: tests
build a view from dicts.

Values are shared, not copied: callers must not change what they read (parse it into a model, or
copy it, before editing).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from kairyu_contracts.objectstate import (
    JSON,
    PARENT_KINDS,
    PARENTS,
    Kind,
    ObjectKey,
    parent_key,
    parent_of,
    workspace_key,
)


class View:
    """The latest known value of each followed object, and which Workspace each belongs to."""

    def __init__(self, kinds: Iterable[Kind] = ()) -> None:
        self.kinds: tuple[Kind, ...] = tuple(kinds)
        self._objects: dict[ObjectKey, JSON] = {}
        self._owner: dict[ObjectKey, str] = {}  # object → its Workspace's namespace/name
        # Workspace namespace/name → kind → objects of that kind belonging to it
        self._owned: defaultdict[str, defaultdict[Kind, set[ObjectKey]]] = defaultdict(
            lambda: defaultdict(set)
        )
        self._parent: dict[ObjectKey, str] = {}  # child → its parent's reconcile key
        self._members: defaultdict[str, set[ObjectKey]] = defaultdict(set)

    # ------------------------------------------------------------------ changes
    def apply(self, key: ObjectKey, value: JSON | None) -> set[str]:
        """Store `value` as the object's state (None: it is gone); the Workspaces it concerns."""
        affected: set[str] = set()
        affected |= self._regroup(key, value)
        before = self._owner.pop(key, None)
        if before is not None:
            affected.add(before)
            owned = self._owned.get(before)
            if owned is not None:
                owned[key.kind].discard(key)
                if not any(owned.values()):
                    del self._owned[before]
        if value is None:
            self._objects.pop(key, None)
            return affected
        self._objects[key] = value
        owner = workspace_key(key.kind, value)
        if owner is not None:
            self._owner[key] = owner
            self._owned[owner][key.kind].add(key)
            affected.add(owner)
        return affected

    def _regroup(self, key: ObjectKey, value: JSON | None) -> set[str]:
        """Keep the parent index (objectstate.PARENTS); the parents' keys the change concerns.

        A parent (an InferenceSet, a MultiRoleInference) is its own key's concern, and each of
        its children's, by the created-by label. Only in a view that follows the parent's kind
        (the planner's): other services' controllers know Workspace keys only.
        """
        affected: set[str] = set()
        if key.kind in PARENT_KINDS and key.kind in self.kinds:
            affected.add(parent_key(key.kind, key.namespace, key.name))
        if key.kind not in PARENTS or PARENTS[key.kind][0] not in self.kinds:
            return affected
        before = self._parent.pop(key, None)
        if before is not None:
            affected.add(before)
            self._members[before].discard(key)
            if not self._members[before]:
                del self._members[before]
        now = parent_of(key.kind, value) if value is not None else None
        if now is not None:
            self._parent[key] = now
            self._members[now].add(key)
            affected.add(now)
        return affected

    def replace(self, kind: Kind, values: Mapping[ObjectKey, JSON]) -> set[str]:
        """Make the objects of `kind` exactly `values` (a fresh snapshot); the Workspaces touched.

        A Workspace is touched when one of its objects appeared, disappeared or changed, so a
        re-synchronisation after an outage wakes only what changed meanwhile.
        """
        affected: set[str] = set()
        current = [k for k in self._objects if k.kind == kind]
        for key in current:
            if key not in values:
                affected |= self.apply(key, None)
        for key, value in values.items():
            if self._objects.get(key) != value:
                affected |= self.apply(key, value)
        return affected

    # ------------------------------------------------------------------ reads
    def get(self, key: ObjectKey) -> JSON | None:
        return self._objects.get(key)

    def workspace(self, ws_key: str) -> JSON | None:
        """The Workspace `namespace/name`, or None if the view does not hold it."""
        namespace, _, name = ws_key.partition("/")
        return self._objects.get(ObjectKey("Workspace", namespace, name))

    def parent(self, key: str) -> JSON | None:
        """The object of a parent's key (`InferenceSet/<namespace>/<name>`, …), if held."""
        kind = next((k for k in PARENT_KINDS if key.startswith(f"{k}/")), None)
        if kind is None:
            return None
        namespace, _, name = key.removeprefix(f"{kind}/").partition("/")
        return self._objects.get(ObjectKey(kind, namespace, name))

    def members(self, key: str) -> list[JSON]:
        """The children labelled as made by the parent `key`, by name."""
        return [self._objects[k] for k in sorted(self._members.get(key) or ())]

    def owned(self, kind: Kind, ws_key: str) -> list[JSON]:
        """The objects of `kind` labelled with the Workspace `namespace/name`, by name."""
        owned = self._owned.get(ws_key)
        keys = sorted(owned.get(kind) or ()) if owned is not None else []
        return [self._objects[k] for k in keys]

    def all(self, kind: Kind) -> list[JSON]:
        """Every object of `kind`, by key."""
        return [self._objects[k] for k in sorted(k for k in self._objects if k.kind == kind)]

    def workspace_keys(self) -> list[str]:
        """`namespace/name` of every Workspace in the view, and of every one that owns objects."""
        keys = {f"{k.namespace}/{k.name}" for k in self._objects if k.kind == "Workspace"}
        return sorted(keys | set(self._owned))

    def __len__(self) -> int:
        return len(self._objects)
