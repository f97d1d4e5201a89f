"""The bus on Service Bus, against the local endpoint with exactly kairyu's entities (issue 20).

The test plays the watcher (its values, `put_state`, `serve_snapshots`) and a deployer follows
Pods: it gets the watcher's values as its snapshot, then each change in order; what it cannot
read is dead-lettered without stopping it. (A broker restart is not tested yet: docs/bus.md.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver

from kairyu_contracts.objectstate import JSON, Kind, ObjectKey, content_digest, trim
from kairyu_core.bus import BusError, Change, Snapshot
from kairyu_core.bus.servicebus import ServiceBusBus, properties_of
from kairyu_core.bus.servicebus_states import SNAPSHOT_ID_PROPERTY, SNAPSHOT_PROPERTY
from kairyu_core.bus.servicebus_topology import servicebus_topology
from kairyu_core.bus.snapshot_pacing import DEFAULT_INTERVAL_S
from kairyu_core.bus.topology import StreamSpec
from kairyu_core.informing import Informer
from kairyu_core.view import View
from kairyu_localenv.servicebus_endpoint import LocalServiceBus
from kairyu_localenv.servicebus_entities import EntitySpec
from kairyu_localenv.servicebus_topology_entities import entity_specs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

KEYS = {"kairyu": "local-secret"}
# Short, so that a session the endpoint still holds for a connection it lost in a restart is free
# again within the test, yet several SDK round trips long on a loaded 2-core machine.
LOCK_S = 6
TOPOLOGY = servicebus_topology(StreamSpec(name="kairyu"), lock_duration_s=LOCK_S)
POD_TOPIC = TOPOLOGY.topic_of("Pod").name
DEPLOYER_PODS = TOPOLOGY.subscription("deployer", "Pod").name


def pod(name: str, *, phase: str = "Pending", version: int = 1, workspace: str = "ws") -> JSON:
    return trim(
        "Pod",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "ns",
                "uid": f"uid-{name}",
                "resourceVersion": str(version),
                "labels": {"kaito.sh/workspace": workspace},
            },
            "status": {"phase": phase},
        },
    )


class Watcher:
    """The watcher's part: its latest values, what it sends, and its snapshot answers."""

    def __init__(self, bus: ServiceBusBus) -> None:
        self.bus = bus
        self.values: dict[ObjectKey, tuple[JSON, str, str | None]] = {}

    def values_of(self, kind: Kind) -> dict[ObjectKey, tuple[JSON, str, str | None]]:
        return {key: held for key, held in self.values.items() if key.kind == kind}

    async def put(self, value: JSON) -> ObjectKey:
        key = ObjectKey.of("Pod", value)
        digest = content_digest(value)
        self.values[key] = (value, digest, None)
        await self.bus.put_state(key, value, digest=digest)
        return key

    async def delete(self, key: ObjectKey) -> None:
        del self.values[key]
        await self.bus.delete_state(key, uid=f"uid-{key.name}")


def _specs() -> list[EntitySpec]:
    return entity_specs(TOPOLOGY)


@pytest.fixture
def endpoint() -> Iterator[LocalServiceBus]:
    with LocalServiceBus(_specs(), keys=KEYS) as local:
        yield local


async def _connect(endpoint: LocalServiceBus, service: str) -> ServiceBusBus:
    return await ServiceBusBus.connect(
        endpoint.connection_string("kairyu"), service=service, topology=TOPOLOGY
    )


@pytest.fixture
async def watcher(endpoint: LocalServiceBus) -> AsyncIterator[Watcher]:
    async with await _connect(endpoint, "watcher") as bus:
        playing = Watcher(bus)
        serving = asyncio.create_task(bus.serve_snapshots(playing.values_of))
        try:
            yield playing
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving


@pytest.fixture
async def deployer(endpoint: LocalServiceBus) -> AsyncIterator[ServiceBusBus]:
    async with await _connect(endpoint, "deployer") as bus:
        yield bus


async def until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def _next(follow: AsyncIterator[Snapshot | Change], timeout: float = 15.0) -> Any:
    return await asyncio.wait_for(anext(follow), timeout)


async def _receive(receiver: ServiceBusReceiver, count: int) -> list[ServiceBusReceivedMessage]:
    got: list[ServiceBusReceivedMessage] = []
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        got += await receiver.receive_messages(max_message_count=count, max_wait_time=0.5)
    return got


async def test_a_follower_gets_the_watchers_values_then_each_change_and_a_tombstone(
    watcher: Watcher, deployer: ServiceBusBus
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


async def test_a_follower_started_during_changes_ends_with_exactly_the_latest_values(
    watcher: Watcher, deployer: ServiceBusBus
) -> None:
    view = View(["Pod"])
    informer = Informer(deployer, view, lambda _: None)

    async def change_pods() -> None:
        for version in range(1, 31):
            await watcher.put(pod(f"p{version % 5}", phase=f"v{version}", version=version))
            if version % 7 == 0:
                await watcher.delete(ObjectKey("Pod", "ns", f"p{version % 5}"))

    changing = asyncio.create_task(change_pods())
    following = asyncio.create_task(informer.run())
    try:
        await changing
        expected = {key: value for key, (value, _, _) in watcher.values.items()}
        await until(
            lambda: {k: view.get(k) for k in expected} == expected and len(view) == len(expected)
        )
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
    assert informer.synced.is_set()


async def test_an_informer_keeps_a_services_view_current_over_service_bus(
    watcher: Watcher, deployer: ServiceBusBus
) -> None:
    await watcher.put(pod("a", workspace="wa"))
    view = View(["Pod"])
    woken: list[str] = []
    following = asyncio.create_task(Informer(deployer, view, woken.extend).run())
    try:
        await until(lambda: len(view) == 1)
        assert woken == ["ns/wa"]
        await watcher.put(pod("a", workspace="wa", phase="Running", version=2))
        await until(lambda: view.owned("Pod", "ns/wa")[0]["status"]["phase"] == "Running")
        assert woken == ["ns/wa", "ns/wa"]
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following


async def test_a_retried_put_reaches_the_follower_once(
    watcher: Watcher, deployer: ServiceBusBus
) -> None:
    follow = deployer.follow_state("Pod")
    try:
        assert await _next(follow) == Snapshot("Pod", {}, {}, {})
        await watcher.put(pod("a", version=7))
        await watcher.put(pod("a", version=7))  # the same uid and resourceVersion: a retry
        await watcher.put(pod("b"))
        first, second = await _next(follow), await _next(follow)
    finally:
        await follow.aclose()
    assert [first.key.name, second.key.name] == ["a", "b"]


@pytest.mark.parametrize("reader", ["*", "kairyu-planner", ""])
async def test_a_snapshot_request_for_someone_not_reading_the_kind_is_refused(
    endpoint: LocalServiceBus, watcher: Watcher, reader: str
) -> None:
    """The planner does not follow Pods, "*" is every reader: the watcher sends nothing."""
    await watcher.put(pod("kept"))
    async with (
        ServiceBusClient.from_connection_string(endpoint.connection_string("kairyu")) as sb,
        sb.get_queue_sender(TOPOLOGY.requests.name) as sender,
    ):
        await sender.send_messages(
            ServiceBusMessage(
                b"",
                application_properties={
                    "kairyu-kind": "Pod",
                    "kairyu-reader": reader,
                    "kairyu-request-id": "r1",
                },
                message_id="r1",
            )
        )
        async with sb.get_queue_receiver(
            TOPOLOGY.requests.name, sub_queue=ServiceBusSubQueue.DEAD_LETTER
        ) as dead_letters:
            (dead,) = await _receive(dead_letters, 1)
    assert dead.dead_letter_reason == "NotASnapshotRequest"
    assert f"reader {reader!r}" in (dead.dead_letter_error_description or "")


async def test_a_malformed_message_is_dead_lettered_with_why_and_the_follower_goes_on(
    endpoint: LocalServiceBus, watcher: Watcher, deployer: ServiceBusBus
) -> None:
    follow = deployer.follow_state("Pod")
    try:
        assert isinstance(await _next(follow), Snapshot)
        async with (
            ServiceBusClient.from_connection_string(endpoint.connection_string("kairyu")) as sb,
            sb.get_topic_sender(POD_TOPIC) as sender,
        ):
            await sender.send_messages(
                ServiceBusMessage(
                    b"{not json",
                    application_properties={
                        "to": "*",
                        "kairyu-kind": "Pod",
                        "kairyu-namespace": "ns",
                        "kairyu-name": "broken",
                    },
                    session_id="Pod",
                    message_id="broken-1",
                )
            )
        await watcher.put(pod("after"))
        change = await _next(follow)
        assert change.key.name == "after"
    finally:
        await follow.aclose()
    async with (
        ServiceBusClient.from_connection_string(endpoint.connection_string("kairyu")) as sb,
        sb.get_subscription_receiver(
            POD_TOPIC, DEPLOYER_PODS, sub_queue=ServiceBusSubQueue.DEAD_LETTER
        ) as dead_letters,
    ):
        (dead,) = await _receive(dead_letters, 1)
    assert dead.message_id == "broken-1"
    assert dead.dead_letter_reason is not None
    assert "not JSON" in dead.dead_letter_reason
    assert "kairyu-deployer" in (dead.dead_letter_error_description or "")


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
        (letter,) = await _receive(receiver, 1)
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
    endpoint: LocalServiceBus, watcher: Watcher, deployer: ServiceBusBus
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
