"""The local Service Bus namespace's rules, with a hand-turned clock and no I/O."""

from __future__ import annotations

import pytest

from kairyu_localenv.servicebus_entities import (
    CorrelationFilter,
    EntitySpec,
    Envelope,
    LockLostError,
    Namespace,
    Outcome,
    QueueSettings,
    SessionCannotBeLockedError,
    SubscriptionSpec,
    specs_from_json,
)


def _namespace() -> Namespace:
    return Namespace(
        [
            EntitySpec("q", settings=QueueSettings(lock_duration_s=10, max_delivery_count=2)),
            EntitySpec("s", settings=QueueSettings(requires_session=True)),
            EntitySpec(
                "t",
                topic=True,
                subscriptions=(
                    SubscriptionSpec("all"),
                    SubscriptionSpec(
                        "gpu",
                        rules=(
                            CorrelationFilter(properties={"kind": "gpu"}),
                            CorrelationFilter(subject="urgent"),
                        ),
                    ),
                ),
            ),
        ]
    )


def test_subscription_rules_are_ored_and_no_rule_takes_everything() -> None:
    ns = _namespace()
    topic = ns.entity("T")
    topic.accept(b"1", Envelope(properties={"kind": "gpu"}), now=0)
    topic.accept(b"2", Envelope(subject="urgent"), now=0)
    topic.accept(b"3", Envelope(properties={"kind": "cpu"}), now=0)

    assert [m.payload for m in ns.store("t/Subscriptions/GPU").peek(0, 10)] == [b"1", b"2"]
    assert len(ns.store("t/subscriptions/all").peek(0, 10)) == 3


def test_an_expired_lock_counts_a_delivery_and_the_max_count_dead_letters() -> None:
    ns = _namespace()
    ns.entity("q").accept(b"x", Envelope(), now=0)
    store = ns.store("q")
    message = store.next_available(0)
    assert message is not None
    token = store.lock(message, owner="r", now=0)

    ns.tick(11)  # past the 10 s lock
    with pytest.raises(LockLostError):
        store.settle(token, Outcome.COMPLETE, now=11)
    assert message.delivery_count == 1
    again = store.next_available(11)
    assert again is message
    store.settle(store.lock(again, owner="r", now=11), Outcome.ABANDON, now=12)

    assert store.next_available(12) is None
    dead = ns.store("q/$DeadLetterQueue").next_available(12)
    assert dead is not None
    assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"


def test_one_receiver_holds_a_session_and_next_available_skips_held_ones() -> None:
    ns = _namespace()
    for session_id in ("a", "b"):
        ns.entity("s").accept(session_id.encode(), Envelope(session_id=session_id), now=0)
    store = ns.store("s")

    assert store.acquire_session(None, owner="r1", now=0) == "a"
    with pytest.raises(SessionCannotBeLockedError):
        store.acquire_session("a", owner="r2", now=1)
    assert store.acquire_session(None, owner="r2", now=1) == "b"
    assert store.acquire_session(None, owner="r3", now=1) is None
    assert store.acquire_session("a", owner="r3", now=61) == "a"  # r1's lock ran out


def test_duplicates_scheduling_and_ttl() -> None:
    ns = Namespace(
        [EntitySpec("q", settings=QueueSettings(default_ttl_s=5), duplicate_detection_window_s=30)]
    )
    queue = ns.entity("q")
    assert queue.accept(b"1", Envelope(message_id="m"), now=0) == 1
    assert queue.accept(b"1", Envelope(message_id="m"), now=10) is None
    assert queue.accept(b"1", Envelope(message_id="m"), now=31) == 2
    later = queue.accept(b"later", Envelope(scheduled_at=50), now=31)
    cancelled = queue.accept(b"never", Envelope(scheduled_at=50), now=31)
    assert cancelled is not None
    queue.cancel([cancelled])
    store = ns.store("q")

    ns.tick(40)  # the first two passed their 5 s time-to-live
    assert store.next_available(40) is None
    ns.tick(50)
    message = store.next_available(50)
    assert message is not None
    assert (message.sequence_number, message.payload) == (later, b"later")


def test_a_snapshot_restores_messages_and_sequence_numbers() -> None:
    ns = _namespace()
    ns.entity("q").accept(b"kept", Envelope(message_id="k", properties={"a": 1}), now=0)
    restored = _namespace()
    restored.restore(ns.snapshot())

    message = restored.store("q").next_available(1)
    assert message is not None
    assert (message.payload, message.envelope.properties) == (b"kept", {"a": 1})
    assert restored.entity("q").accept(b"next", Envelope(), now=1) == 2


def test_entities_from_json() -> None:
    specs = specs_from_json(
        {
            "queues": [{"name": "q", "lock_duration_s": 2, "requires_session": True}],
            "topics": [
                {"name": "t", "subscriptions": [{"name": "s", "rules": [{"subject": "x"}]}]}
            ],
        }
    )

    assert specs[0].settings == QueueSettings(lock_duration_s=2, requires_session=True)
    assert specs[1].subscriptions[0].rules == (CorrelationFilter(subject="x"),)
