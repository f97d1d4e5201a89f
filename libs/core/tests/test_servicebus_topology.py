"""The Service Bus entities carry exactly the NATS topology's families, to the same readers."""

from __future__ import annotations

import pytest

from kairyu_contracts.objectstate import KINDS
from kairyu_core.bus import StreamSpec
from kairyu_core.bus.servicebus_topology import (
    EVERY_READER,
    SUBSCRIPTION_NAME_MAX,
    entity_name,
    servicebus_topology,
)
from kairyu_core.bus.topology import FOLLOWS, reads


def test_each_kind_has_a_topic_and_each_follower_a_subscription_to_it() -> None:
    topology = servicebus_topology()
    assert [t.name for t in topology.topics] == [f"kairyu-state-{k.lower()}" for k in KINDS]
    for service, kinds in FOLLOWS.items():
        if service == "watcher":
            continue
        followed = {s.topic for s in topology.subscriptions if s.service == service}
        assert followed == {topology.topic_of(k).name for k in kinds}, service
        # The same kinds as the service's NATS consumers filter on.
        assert len(followed) == len(reads(service)), service


def test_the_watcher_reads_nothing_back_and_sends_snapshots_instead() -> None:
    topology = servicebus_topology()
    assert not [s for s in topology.subscriptions if s.service == "watcher"]
    assert topology.requests.readers == ("watcher",)
    assert "watcher" not in topology.requests.writers
    assert "planner" in topology.requests.writers


def test_a_subscription_takes_what_every_reader_gets_and_what_is_addressed_to_it() -> None:
    subscription = servicebus_topology().subscription("provisioner", "NodeClaim")
    assert subscription.topic == "kairyu-state-nodeclaim"
    assert subscription.name == "kairyu-provisioner"
    assert subscription.matches == (EVERY_READER, "kairyu-provisioner")
    assert subscription.requires_session
    assert len(subscription.name) <= SUBSCRIPTION_NAME_MAX
    with pytest.raises(KeyError, match="planner does not follow NodeClaim"):
        servicebus_topology().subscription("planner", "NodeClaim")


def test_dead_letters_keep_the_streams_limits_and_writers() -> None:
    spec = StreamSpec(name="T1")
    topology = servicebus_topology(spec)
    assert topology.dead_letters.name == "t1-deadletters"
    assert topology.dead_letters.message_ttl_s == 7 * 24 * 3600
    assert topology.dead_letters.writers == (
        "planner",
        "provisioner",
        "deployer",
        "tuner",
        "activator",
    )
    assert topology.entity_names()[-2:] == ("t1-state-requests", "t1-deadletters")


def test_a_name_service_bus_cannot_hold_is_refused() -> None:
    assert entity_name(StreamSpec(name="My_Stream"), "state", "pod") == "my-stream-state-pod"
    with pytest.raises(ValueError, match="too long"):
        entity_name(StreamSpec(name="x" * 300), "deadletters")
