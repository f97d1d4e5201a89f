"""Subject names and the declared topology."""

import pytest

from kairyu_contracts.objectstate import CLUSTER_SCOPED, KINDS, ObjectKey
from kairyu_contracts.subjects import Subjects
from kairyu_core.bus import FOLLOWS, SUBJECTS, StreamSpec, topology
from kairyu_core.bus._statestream import key_of_subject, state_subject


def test_state_subjects_name_the_kind_and_the_object() -> None:
    key = ObjectKey("Pod", "team-a", "phi.3-0")
    subject = state_subject("kairyu", key)
    assert subject == "kairyu.v1.state.pod.team-a.phi_3-0"
    assert key_of_subject(subject) == key
    node = ObjectKey("Node", CLUSTER_SCOPED, "gpu.1")
    assert state_subject("kairyu", node) == "kairyu.v1.state.node._.gpu_1"
    assert Subjects().states_of("NodeClaim") == "kairyu.v1.state.nodeclaim.>"


def test_dead_letters_name_the_service_and_the_workspace() -> None:
    subjects = Subjects(prefix="kairyu")
    original = subjects.reconcile("team-a", "phi.3")
    assert original == "kairyu.v1.workspace.reconcile.team-a.phi_3"
    assert (
        subjects.dead_letter("kairyu-planner", original)
        == "kairyu.v1.deadletter.kairyu-planner.workspace.reconcile.team-a.phi_3"
    )


def test_every_subject_kairyu_writes_has_its_stream() -> None:
    spec = StreamSpec(name="S", subjects=Subjects(prefix="p"))
    assert spec.stream_of("p.v1.state.pod.ns.a") == "S_STATE"
    assert spec.stream_of("p.v1.deadletter.kairyu-tuner.workspace.reconcile.ns.a") == "S_DEADLETTER"
    with pytest.raises(ValueError, match="no kairyu stream"):
        spec.stream_of("p.v1.workspace.observed.ns.a")  # the event stream is gone
    for family in spec.families:
        assert spec.stream_of(family.wildcard.removesuffix(">") + "x") == family.stream


def test_the_topology_has_one_writer_per_family_and_readers_from_follows() -> None:
    states = [f for f in SUBJECTS if f.stream.endswith("_STATE")]
    assert len(states) == len(KINDS)
    for family, kind in zip(states, KINDS, strict=True):
        assert family.producers == ("watcher",)
        assert set(family.readers) == {s for s, kinds in FOLLOWS.items() if kind in kinds}
    letters = [f for f in SUBJECTS if f.stream.endswith("_DEADLETTER")]
    assert [f.producers for f in letters] == [(s,) for s in topology.RECONCILERS]
    assert all(f.readers == () for f in letters)
    assert topology.publishes("watcher") == tuple(f.wildcard for f in states)
    assert topology.reads("planner") == (
        "kairyu.v1.state.workspace.>",
        "kairyu.v1.state.node.>",
        "kairyu.v1.state.inferenceset.>",
        "kairyu.v1.state.multiroleinference.>",
    )
