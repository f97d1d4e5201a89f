"""A follower on Service Bus sees what a follower on NATS sees: a snapshot, then each change."""

from __future__ import annotations

import pytest

from kairyu_contracts.objectstate import ObjectKey
from kairyu_core.bus import Change, Snapshot
from kairyu_core.bus.servicebus_states import (
    Assembly,
    OutMessage,
    StateMessage,
    decode,
    snapshot_messages,
    state_message,
    tombstone_message,
)

ME = "kairyu-deployer"
A = ObjectKey("Pod", "ml", "a")
B = ObjectKey("Pod", "ml", "b")


def pod(name: str, version: int) -> dict[str, object]:
    return {"metadata": {"name": name, "uid": f"u-{name}", "resourceVersion": str(version)}}


def received(message: OutMessage) -> StateMessage:
    """What a follower decodes from a sent message (the wire keeps body and properties)."""
    return decode(message.body, dict(message.properties))


def feed_all(assembly: Assembly, messages: list[OutMessage]) -> list[Snapshot | Change]:
    out = [assembly.feed(received(m)) for m in messages]
    return [item for item in out if item is not None]


def test_a_change_round_trips_with_its_digest_wake_and_order_key() -> None:
    sent = state_message(A, pod("a", 7), digest="d7", wake="w7")
    assert (sent.session_id, sent.message_id) == ("Pod", "u-a/7")
    got = received(sent)
    assert (got.key, got.value, got.digest, got.wake) == (A, pod("a", 7), "d7", "w7")
    gone = received(tombstone_message(A, uid="u-a"))
    assert (gone.key, gone.value) == (A, None)


def test_backlog_before_the_snapshot_is_dropped_then_changes_follow_it() -> None:
    assembly = Assembly("Pod", ME)
    items = feed_all(
        assembly,
        [
            state_message(A, pod("a", 1), digest="d1", wake=None),  # from before it asked
            *snapshot_messages("Pod", {A: (pod("a", 2), "d2", "w2")}, to=ME, snapshot_id="s1"),
            state_message(B, pod("b", 3), digest="d3", wake=None),
            tombstone_message(A, uid="u-a"),
        ],
    )
    snapshot, added, deleted = items
    assert isinstance(snapshot, Snapshot)
    assert snapshot.values == {A: pod("a", 2)}
    assert (snapshot.digests, snapshot.wakes) == ({A: "d2"}, {A: "w2"})
    assert added == Change(B, pod("b", 3), "d3", None)
    assert deleted == Change(A, None, None, None)


def test_changes_sent_during_a_snapshot_are_in_it_and_not_repeated() -> None:
    assembly = Assembly("Pod", ME)
    begin, value_a, end = snapshot_messages(
        "Pod", {A: (pod("a", 2), "d2", None)}, to=ME, snapshot_id="s1"
    )
    items = feed_all(
        assembly,
        [
            begin,
            state_message(B, pod("b", 5), digest="d5", wake=None),  # a change meanwhile
            value_a,
            tombstone_message(A, uid="u-a"),  # deleted after the watcher read it
            end,
        ],
    )
    (snapshot,) = items
    assert isinstance(snapshot, Snapshot)
    assert snapshot.values == {B: pod("b", 5)}


def test_another_readers_snapshot_is_ignored_and_a_watchers_broadcast_replaces_the_view() -> None:
    assembly = Assembly("Pod", ME)
    other = snapshot_messages(
        "Pod", {A: (pod("a", 1), "d1", None)}, to="kairyu-tuner", snapshot_id="x"
    )
    assert feed_all(assembly, other) == []
    assert not assembly.synced
    mine = snapshot_messages("Pod", {A: (pod("a", 1), "d1", None)}, to=ME, snapshot_id="s1")
    again = snapshot_messages("Pod", {B: (pod("b", 2), "d2", None)}, to="*", snapshot_id="w2")
    first, second = feed_all(assembly, [*mine, *again])
    assert isinstance(first, Snapshot)
    assert isinstance(second, Snapshot)
    assert set(second.values) == {B}  # a restarted watcher's view: A was deleted meanwhile


def test_a_lost_session_waits_for_a_new_snapshot() -> None:
    assembly = Assembly("Pod", ME)
    feed_all(assembly, snapshot_messages("Pod", {}, to=ME, snapshot_id="s1"))
    assert assembly.synced
    assembly.restart()
    assert feed_all(assembly, [state_message(A, pod("a", 1), digest="d", wake=None)]) == []


def test_an_interrupted_snapshot_never_ends_the_next_one() -> None:
    assembly = Assembly("Pod", ME)
    begin_1, *_ = snapshot_messages("Pod", {}, to=ME, snapshot_id="s1")
    *_, end_1 = snapshot_messages("Pod", {}, to=ME, snapshot_id="s1")
    begin_2, value, end_2 = snapshot_messages(
        "Pod", {A: (pod("a", 1), "d", None)}, to=ME, snapshot_id="s2"
    )
    assert feed_all(assembly, [begin_1, begin_2, end_1]) == []
    (snapshot,) = feed_all(assembly, [value, end_2])
    assert isinstance(snapshot, Snapshot)
    assert set(snapshot.values) == {A}


@pytest.mark.parametrize(
    ("properties", "body", "message"),
    [
        ({"to": "*"}, b"{}", "no known kairyu-kind"),
        ({"kairyu-kind": "Secret", "to": "*"}, b"{}", "no known kairyu-kind: 'Secret'"),
        ({"kairyu-kind": "Pod"}, b"{}", "no to"),
        (
            {
                "kairyu-kind": "Pod",
                "to": "*",
                "kairyu-snapshot": "middle",
                "kairyu-snapshot-id": "s",
            },
            b"",
            "unknown snapshot marker",
        ),
        ({"kairyu-kind": "Pod", "to": "*", "kairyu-snapshot": "begin"}, b"", "without its id"),
        ({"kairyu-kind": "Pod", "to": "*", "kairyu-namespace": "ml"}, b"{}", "namespace and name"),
        (
            {"kairyu-kind": "Pod", "to": "*", "kairyu-namespace": "ml", "kairyu-name": "a"},
            b"{",
            "not JSON",
        ),
        (
            {"kairyu-kind": "Pod", "to": "*", "kairyu-namespace": "ml", "kairyu-name": "a"},
            b"[1]",
            "not an object",
        ),
    ],
)
def test_a_malformed_message_is_refused_with_the_reason(
    properties: dict[str, str], body: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        decode(body, properties)


def test_a_message_of_another_kind_in_the_session_is_refused() -> None:
    assembly = Assembly("Node", ME)
    with pytest.raises(ValueError, match="a Pod message in the Node session"):
        assembly.feed(received(state_message(A, pod("a", 1), digest="d", wake=None)))


def test_snapshot_values_are_not_dropped_as_duplicates_of_the_changes() -> None:
    change = state_message(A, pod("a", 4), digest="d", wake=None)
    _, value, _ = snapshot_messages("Pod", {A: (pod("a", 4), "d", None)}, to=ME, snapshot_id="s9")
    assert value.message_id != change.message_id
    assert value.session_id == change.session_id == "Pod"
