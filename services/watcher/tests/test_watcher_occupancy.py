"""Which names of a Workspace's objects are held by someone else (pure: no NATS, no cluster)."""

from __future__ import annotations

from typing import Any

from kairyu_contracts.childnames import claimants
from kairyu_contracts.objectstate import occupant_key
from kairyu_watcher.occupancy import Occupancy, identity

NS = "ml"


def ws(name: str, uid: str) -> dict[str, Any]:
    return {"metadata": {"namespace": NS, "name": name, "uid": uid}}


def obj(name: str, uid: str, controller: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": NS, "name": name, "uid": uid, "resourceVersion": "5"}
    if controller is not None:
        meta["ownerReferences"] = [
            {"kind": "Workspace", "name": "x", "uid": "other", "controller": False},
            {"kind": "Workspace", "name": "x", "uid": controller, "controller": True},
        ]
    return {"metadata": meta}


def test_a_users_service_named_like_a_new_workspace_is_an_occupant_until_it_goes() -> None:
    occupancy = Occupancy()
    assert occupancy.object_changed("Service", obj("phi", "svc"), deleted=False, source="n") == []
    ((key, value),) = occupancy.workspace_changed(ws("phi", "w1"), deleted=False)
    assert key == occupant_key(NS, "phi", "Service", "phi")
    assert value is not None
    assert value["metadata"]["labels"] == {"kaito.sh/workspace": "phi"}  # wakes Workspace phi
    assert value["spec"] == {"kind": "Service", "name": "phi", "uid": "svc", "controller": None}
    assert occupancy.current() == {key}
    # Deleted by its user: the tombstone.
    gone = occupancy.object_changed("Service", obj("phi", "svc"), deleted=True, source="n")
    assert gone == [(key, None)]
    assert occupancy.current() == set()


def test_the_workspaces_own_objects_and_unrelated_names_make_no_occupant() -> None:
    occupancy = Occupancy()
    occupancy.workspace_changed(ws("phi", "w1"), deleted=False)
    mine = obj("phi-inference-config", "cm", controller="w1")
    assert occupancy.object_changed("ConfigMap", mine, deleted=False, source="n") == []
    other = obj("phi-settings", "cm2")
    assert occupancy.object_changed("ConfigMap", other, deleted=False, source="n") == []
    # The same name of another kind is no claim either: the Workspace makes no such NetworkPolicy.
    assert (
        occupancy.object_changed("Job", obj("phi-headless", "j"), deleted=False, source="n") == []
    )


def test_objects_of_a_deleted_and_recreated_workspace_block_the_new_one() -> None:
    """Same name, new uid: what the old Workspace controlled is not the new one's."""
    occupancy = Occupancy()
    occupancy.workspace_changed(ws("phi", "old"), deleted=False)
    assert (
        occupancy.object_changed(
            "Deployment", obj("phi", "d", controller="old"), deleted=False, source="labelled"
        )
        == []
    )
    occupancy.workspace_changed(ws("phi", "old"), deleted=True)
    ((key, value),) = occupancy.workspace_changed(ws("phi", "new"), deleted=False)
    assert value is not None
    assert value["spec"]["controller"] == "old"
    # The garbage collector removes it.
    done = occupancy.object_changed(
        "Deployment", obj("phi", "d", controller="old"), deleted=True, source="labelled"
    )
    assert done == [(key, None)]


def test_a_workspace_deleted_takes_its_occupants_with_it() -> None:
    occupancy = Occupancy()
    occupancy.object_changed("NetworkPolicy", obj("phi", "np"), deleted=False, source="n")
    ((key, _),) = occupancy.workspace_changed(ws("phi", "w1"), deleted=False)
    assert occupancy.workspace_changed(ws("phi", "w1"), deleted=False) == []  # nothing new
    assert occupancy.workspace_changed(ws("phi", "w1"), deleted=True) == [(key, None)]


def test_a_workload_seen_by_two_watches_holds_its_name_until_both_let_go() -> None:
    """A label removed: the labelled watch says DELETED, the other ADDED, in either order."""
    occupancy = Occupancy()
    occupancy.workspace_changed(ws("phi", "w1"), deleted=False)
    stranger = obj("phi", "d")
    (added,) = occupancy.object_changed("Deployment", stranger, deleted=False, source="names")
    assert added[1] is not None
    assert occupancy.object_changed("Deployment", stranger, deleted=True, source="labelled") == []
    assert occupancy.object_changed("Deployment", stranger, deleted=False, source="labelled") == []
    assert occupancy.object_changed("Deployment", stranger, deleted=True, source="names") == []
    assert occupancy.object_changed("Deployment", stranger, deleted=True, source="labelled") == [
        (added[0], None)
    ]


def test_one_name_can_block_two_workspaces() -> None:
    assert sorted(claimants("Service", "a-headless")) == ["a", "a-headless"]
    occupancy = Occupancy()
    occupancy.workspace_changed(ws("a", "wa"), deleted=False)
    occupancy.workspace_changed(ws("a-headless", "wb"), deleted=False)
    changes = occupancy.object_changed("Service", obj("a-headless", "s"), deleted=False, source="n")
    assert {key.name for key, _ in changes} == {
        occupant_key(NS, "a", "Service", "a-headless").name,
        occupant_key(NS, "a-headless", "Service", "a-headless").name,
    }


def test_a_metadata_watch_keeps_only_identity_and_controller() -> None:
    full = obj("phi", "u", controller="w1")
    full["metadata"] |= {"labels": {"a": "b"}, "managedFields": [{"manager": "x"}]}
    kept = identity(full)
    assert kept == {
        "metadata": {
            "name": "phi",
            "namespace": NS,
            "uid": "u",
            "resourceVersion": "5",
            "ownerReferences": [
                {"kind": "Workspace", "name": "x", "uid": "w1", "controller": True}
            ],
        }
    }
