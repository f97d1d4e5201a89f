"""The bus on Service Bus, against the local endpoint with exactly kairyu's entities (issue 20).

What only Service Bus does: the test plays the watcher (its values, `put_state`,
`serve_snapshots`) and a deployer follows Pods, getting the watcher's values between markers as
its snapshot (with their digests), then each change; the watcher refuses a snapshot request that
is not from a reader of the kind; dead letters carry their reason in properties on the
dead-letters queue; and the entities, the key and their errors. What both transports must do
alike (order, dedupe, retries and dead letters, a killed follower, a broker restart, an
unreadable message) is the contract suite's, test_bus_contract.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient
from bus_transports import KEYS, SERVICEBUS_TOPOLOGY, Writer, pod, receive, until

from kairyu_contracts.objectstate import content_digest
from kairyu_core.bus import BusError, Change, Snapshot
from kairyu_core.bus.servicebus import ServiceBusBus, properties_of
from kairyu_core.bus.servicebus_states import SNAPSHOT_ID_PROPERTY, SNAPSHOT_PROPERTY
from kairyu_core.bus.servicebus_topology import servicebus_topology
from kairyu_core.bus.snapshot_pacing import DEFAULT_INTERVAL_S
from kairyu_core.bus.topology import StreamSpec
from kairyu_localenv.servicebus_endpoint import LocalServiceBus
from kairyu_localenv.servicebus_entities import EntitySpec
from kairyu_localenv.servicebus_topology_entities import entity_specs
from kairyu_testing.bus import collect_sdk_garbage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

TOPOLOGY = SERVICEBUS_TOPOLOGY


def _specs() -> list[EntitySpec]:
    return entity_specs(TOPOLOGY)


@pytest.fixture
def endpoint() -> Iterator[LocalServiceBus]:
    with LocalServiceBus(_specs(), keys=KEYS) as local:
        yield local
    collect_sdk_garbage()


async def _connect(endpoint: LocalServiceBus, service: str) -> ServiceBusBus:
    return await ServiceBusBus.connect(
        endpoint.connection_string("kairyu"), service=service, topology=TOPOLOGY
    )


@pytest.fixture
async def watcher(endpoint: LocalServiceBus) -> AsyncIterator[Writer]:
    async with await _connect(endpoint, "watcher") as bus, Writer(bus).answering() as playing:
        yield playing


@pytest.fixture
async def deployer(endpoint: LocalServiceBus) -> AsyncIterator[ServiceBusBus]:
    async with await _connect(endpoint, "deployer") as bus:
        yield bus


async def _next(follow: AsyncIterator[Snapshot | Change], timeout: float = 15.0) -> Any:
    return await asyncio.wait_for(anext(follow), timeout)


async def test_a_follower_gets_the_watchers_values_then_each_change_and_a_tombstone(
    watcher: Writer, deployer: ServiceBusBus
) -> None:
    a = await watcher.put(pod("a", phase="Pending"))
    await watcher.put(pod("a", phase="Running", version=2))
    b = await watcher.put(pod("b"))
    follow = deployer.follow_state("Pod")
    try:
        first = await _next(follow)
        assert isinstance(first, Snapshot)
        assert set(first.values) == {a, b}
        assert first.values[a]["status"]["phase"] == "Running"
        assert first.digests[a] == content_digest(pod("a", phase="Running", version=2))

        await watcher.put(pod("a", phase="Succeeded", version=3))
        await watcher.put(pod("c"))
        await watcher.delete(b)
        changes = [await _next(follow) for _ in range(3)]
    finally:
        await follow.aclose()
    assert [(c.key.name, c.value and c.value["status"]["phase"]) for c in changes] == [
        ("a", "Succeeded"),
        ("c", "Pending"),
        ("b", None),
    ]


@pytest.mark.parametrize(
    ("reader", "request_id"),
    [
        ("*", "0" * 32),
        ("kairyu-planner", "0" * 32),
        ("", "0" * 32),
        # a reader of Pods, but an id too long for the answer's message ids (128 characters)
        ("kairyu-deployer", "a" * 200),
    ],
    ids=["every-reader", "not-a-reader", "no-reader", "long-id"],
)
async def test_a_snapshot_request_for_someone_not_reading_the_kind_is_dropped(
    endpoint: LocalServiceBus,
    watcher: Writer,
    deployer: ServiceBusBus,
    reader: str,
    request_id: str,
) -> None:
    """The planner does not follow Pods, "*" is every reader: the watcher sends nothing.

    Dropped, not dead-lettered: nobody reads the requests queue's dead letters, and they would
    pile up there, unexpired, until the queue refused every follower's requests.
    """
    serving = watcher.bus
    assert isinstance(serving, ServiceBusBus)
    await watcher.put(pod("kept"))
    subscription = TOPOLOGY.subscription("deployer", "Pod")
    async with ServiceBusClient.from_connection_string(endpoint.connection_string("kairyu")) as sb:
        async with sb.get_queue_sender(TOPOLOGY.requests.name) as sender:
            await sender.send_messages(
                ServiceBusMessage(
                    b"",
                    application_properties={
                        "kairyu-kind": "Pod",
                        "kairyu-reader": reader,
                        "kairyu-request-id": request_id,
                    },
                    message_id="bad-request",
                )
            )
        await until(lambda: serving.refused_requests == 1)
        asked = await deployer.request_snapshot("Pod")
        async with sb.get_subscription_receiver(
            subscription.topic, subscription.name, session_id="Pod"
        ) as receiver:
            began = [
                properties_of(m)[SNAPSHOT_ID_PROPERTY]
                for m in await receive(receiver, 3)  # begin, the one Pod, end
                if properties_of(m).get(SNAPSHOT_PROPERTY) == "begin"
            ]
        async with sb.get_queue_receiver(
            TOPOLOGY.requests.name, sub_queue=ServiceBusSubQueue.DEAD_LETTER
        ) as dead_letters:
            assert await dead_letters.peek_messages(max_message_count=5) == []
    # The deployer's first snapshot is the one it asked for: none was sent for the bad request.
    assert began == [asked]


async def test_a_dead_lettered_reconcile_is_on_the_dead_letters_queue(
    endpoint: LocalServiceBus, deployer: ServiceBusBus
) -> None:
    published = await deployer.dead_letter_reconcile(
        "deployer", "ns/ws", reason="BadPreset", error="x" * 5000
    )
    assert published.stream == TOPOLOGY.dead_letters.name
    async with (
        ServiceBusClient.from_connection_string(endpoint.connection_string("kairyu")) as sb,
        sb.get_queue_receiver(TOPOLOGY.dead_letters.name) as receiver,
    ):
        (letter,) = await receive(receiver, 1)
    properties = properties_of(letter)
    assert str(letter) == "ns/ws"
    assert properties["kairyu-dead-letter-reason"] == "BadPreset"
    assert properties["kairyu-dead-letter-error"] == "x" * 1024
    assert properties["kairyu-service"] == "deployer"
    assert properties["kairyu-key"] == "ns/ws"


async def test_a_missing_entity_makes_check_streams_name_it(endpoint: LocalServiceBus) -> None:
    topology = servicebus_topology(StreamSpec(name=f"other-{uuid.uuid4().hex[:6]}"))
    async with await ServiceBusBus.connect(
        endpoint.connection_string("kairyu"), service="tuner", topology=topology
    ) as bus:
        with pytest.raises(BusError, match=r"entity other-\S+ does not exist.*set-up template"):
            await bus.check_streams()


async def test_the_entities_are_all_there_for_every_service(endpoint: LocalServiceBus) -> None:
    for service in ("watcher", "deployer"):
        async with await _connect(endpoint, service) as bus:
            await bus.wait_for_streams()
            assert bus.topology_ready
            assert bus.is_connected


async def test_a_wrong_key_is_a_clear_bus_error_not_a_hang(endpoint: LocalServiceBus) -> None:
    wrong = endpoint.connection_string("kairyu").replace("local-secret", "guessed")
    started = time.monotonic()
    async with await ServiceBusBus.connect(wrong, service="deployer", topology=TOPOLOGY) as bus:
        with pytest.raises(BusError, match="refused this service's key"):
            await bus.wait_for_streams()
        with pytest.raises(BusError):
            await bus.dead_letter_reconcile("deployer", "ns/ws", reason="R", error="e")
    assert time.monotonic() - started < 15


async def test_a_flood_of_snapshot_requests_costs_one_snapshot_per_interval(
    endpoint: LocalServiceBus, watcher: Writer, deployer: ServiceBusBus
) -> None:
    """A service's credential may send requests; each would cost the watcher a whole kind."""
    await watcher.put(pod("a"))
    asked = [await deployer.request_snapshot("Pod") for _ in range(30)]
    subscription = TOPOLOGY.subscription("deployer", "Pod")
    began: list[tuple[float, str]] = []
    start = time.monotonic()
    async with (
        ServiceBusClient.from_connection_string(endpoint.connection_string("kairyu")) as sb,
        sb.get_subscription_receiver(
            subscription.topic, subscription.name, session_id="Pod"
        ) as receiver,
    ):
        while time.monotonic() - start < DEFAULT_INTERVAL_S * 2:
            for message in await receiver.receive_messages(max_wait_time=0.5):
                properties = properties_of(message)
                if properties.get(SNAPSHOT_PROPERTY) == "begin":
                    began.append((time.monotonic() - start, properties[SNAPSHOT_ID_PROPERTY]))
                await receiver.complete_message(message)
            await receiver.session.renew_lock()  # held longer than LOCK_S
    # The first request at once; the 29 after it held and answered together, with the latest id.
    assert [snapshot_id for _, snapshot_id in began] == [asked[0], asked[-1]]
    assert began[1][0] - began[0][0] >= DEFAULT_INTERVAL_S - 1
