"""The local Service Bus endpoint, driven only by the real azure-servicebus async SDK.

No cluster and no NATS: marked integration only because each test takes a few seconds.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusSubQueue,
)
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
)

from kairyu_localenv.servicebus_endpoint import LocalServiceBus
from kairyu_localenv.servicebus_entities import (
    CorrelationFilter,
    EntitySpec,
    QueueSettings,
    SubscriptionSpec,
)
from kairyu_testing.bus import collect_sdk_garbage

# each test opens and closes SDK handlers, about a second apiece (the SDK polls every 50 ms)
pytestmark = pytest.mark.integration

KEYS = {"kairyu": "local-secret"}
# Short, so lock expiry is testable in seconds, yet long enough that a renewal at 0.6 of it
# lands in time on a loaded 2-core CI machine (the SDK takes up to half a second a round trip).
LOCK_S = 4.0


def _entities() -> list[EntitySpec]:
    return [
        EntitySpec(
            "orders",
            settings=QueueSettings(lock_duration_s=LOCK_S, max_delivery_count=3),
            duplicate_detection_window_s=60,
        ),
        EntitySpec("jobs", settings=QueueSettings(lock_duration_s=LOCK_S, requires_session=True)),
        EntitySpec(
            "events",
            topic=True,
            subscriptions=(
                SubscriptionSpec("gpu", rules=(CorrelationFilter(properties={"kind": "gpu"}),)),
                SubscriptionSpec(
                    "audit",
                    rules=(
                        CorrelationFilter(subject="audit"),
                        CorrelationFilter(correlation_id="c1"),
                    ),
                ),
            ),
        ),
    ]


@pytest.fixture
def bus() -> Iterator[LocalServiceBus]:
    with LocalServiceBus(_entities(), keys=KEYS) as endpoint:
        yield endpoint
    collect_sdk_garbage()


@pytest.fixture
async def client(bus: LocalServiceBus) -> AsyncIterator[ServiceBusClient]:
    async with ServiceBusClient.from_connection_string(
        bus.connection_string("kairyu"), retry_total=0
    ) as sb:
        yield sb


async def _receive(
    receiver: ServiceBusReceiver, count: int, *, within_s: float = 5.0
) -> list[ServiceBusReceivedMessage]:
    """Up to `count` messages, waiting at most `within_s` for them all."""
    got: list[ServiceBusReceivedMessage] = []
    deadline = time.monotonic() + within_s
    while len(got) < count and time.monotonic() < deadline:
        got += await receiver.receive_messages(
            max_message_count=count - len(got), max_wait_time=0.5
        )
    return got


def _texts(messages: list[ServiceBusReceivedMessage]) -> list[str]:
    return [str(m) for m in messages]


async def test_a_message_and_its_properties_make_the_round_trip(client: ServiceBusClient) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with client.get_queue_sender("orders") as sender:
        await sender.send_messages(
            ServiceBusMessage(
                '{"workspace": "ws-1"}',
                application_properties={"traceparent": traceparent, "attempt": 2},
                message_id="m-1",
                correlation_id="corr",
                subject="planned",
                content_type="application/json",
            )
        )
    async with client.get_queue_receiver("ORDERS") as receiver:  # names are case-insensitive
        (message,) = await _receive(receiver, 1)
        received_at = datetime.datetime.now(datetime.UTC)
        locked_until = message.locked_until_utc  # a settled message no longer has one
        await receiver.complete_message(message)
        assert await _receive(receiver, 1, within_s=1) == []

    assert str(message) == '{"workspace": "ws-1"}'
    assert message.application_properties == {b"traceparent": traceparent.encode(), b"attempt": 2}
    assert (message.message_id, message.correlation_id, message.subject) == (
        "m-1",
        "corr",
        "planned",
    )
    assert message.content_type == "application/json"
    assert message.sequence_number == 1
    assert message.delivery_count == 0
    assert message.enqueued_time_utc is not None
    assert locked_until is not None
    assert locked_until > received_at


async def test_a_batch_arrives_as_separate_messages(client: ServiceBusClient) -> None:
    async with client.get_queue_sender("orders") as sender:
        batch = await sender.create_message_batch()
        for index in range(4):
            batch.add_message(
                ServiceBusMessage(f"item-{index}", application_properties={"i": index})
            )
        await sender.send_messages(batch)
    async with client.get_queue_receiver("orders") as receiver:
        messages = await _receive(receiver, 4)
        for message in messages:
            await receiver.complete_message(message)
        assert await _receive(receiver, 1, within_s=0.5) == []

    assert _texts(messages) == [f"item-{index}" for index in range(4)]
    assert [m.sequence_number for m in messages] == [1, 2, 3, 4]


async def test_a_topic_delivers_only_to_subscriptions_whose_rules_match(
    client: ServiceBusClient,
) -> None:
    async with client.get_topic_sender("events") as sender:
        await sender.send_messages(
            [
                ServiceBusMessage("gpu-node", application_properties={"kind": "gpu"}),
                ServiceBusMessage("cpu-node", application_properties={"kind": "cpu"}),
                ServiceBusMessage("audited", subject="audit"),
                ServiceBusMessage("correlated", correlation_id="c1"),
            ]
        )
    received = {}
    for subscription, expected in (("gpu", 1), ("audit", 2)):
        async with client.get_subscription_receiver("events", subscription) as receiver:
            received[subscription] = _texts(await _receive(receiver, expected))
            assert await _receive(receiver, 1, within_s=0.5) == []

    assert received == {"gpu": ["gpu-node"], "audit": ["audited", "correlated"]}


async def test_a_session_receiver_gets_its_session_in_order(client: ServiceBusClient) -> None:
    async with client.get_queue_sender("jobs") as sender:
        await sender.send_messages(
            [ServiceBusMessage(f"{sid}-{n}", session_id=sid) for n in range(3) for sid in "ab"]
        )
    async with client.get_queue_receiver("jobs", session_id="b") as receiver:
        got_b = await _receive(receiver, 3)
        for message in got_b:
            await receiver.complete_message(message)
        assert await _receive(receiver, 1, within_s=0.5) == []
        assert receiver.session is not None
        await receiver.session.set_state(b"cursor-3")
        assert await receiver.session.get_state() == b"cursor-3"
    async with client.get_queue_receiver(
        "jobs", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=2
    ) as receiver:
        assert receiver.session is not None
        next_session = receiver.session.session_id
        got_next = await _receive(receiver, 3)

    assert _texts(got_b) == ["b-0", "b-1", "b-2"]
    assert next_session == "a"
    assert _texts(got_next) == ["a-0", "a-1", "a-2"]
    assert all(m.session_id == "a" for m in got_next)


async def test_abandon_redelivers_and_dead_letter_moves_to_the_sub_queue(
    client: ServiceBusClient,
) -> None:
    async with client.get_queue_sender("orders") as sender:
        await sender.send_messages([ServiceBusMessage("retry-me"), ServiceBusMessage("poison")])
    async with client.get_queue_receiver("orders") as receiver:
        first, poison = await _receive(receiver, 2)
        await receiver.abandon_message(first)
        await receiver.dead_letter_message(
            poison, reason="BadPayload", error_description="not JSON"
        )
        (again,) = await _receive(receiver, 1)
        await receiver.complete_message(again)
    async with client.get_queue_receiver("orders", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
        (dead,) = await _receive(dlq, 1)
        await dlq.complete_message(dead)

    assert (str(again), again.delivery_count) == ("retry-me", 1)
    assert str(dead) == "poison"
    assert (dead.dead_letter_reason, dead.dead_letter_error_description) == (
        "BadPayload",
        "not JSON",
    )


async def test_the_max_delivery_count_dead_letters_a_message(client: ServiceBusClient) -> None:
    async with client.get_queue_sender("orders") as sender:
        await sender.send_messages(ServiceBusMessage("always-fails"))
    async with client.get_queue_receiver("orders") as receiver:
        for _ in range(3):  # the queue's max delivery count
            (message,) = await _receive(receiver, 1)
            await receiver.abandon_message(message)
        assert await _receive(receiver, 1, within_s=1) == []
    async with client.get_queue_receiver("orders", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
        (dead,) = await _receive(dlq, 1)

    assert str(dead) == "always-fails"
    assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"


async def test_a_renewed_lock_outlives_the_lock_duration_and_an_expired_one_redelivers(
    client: ServiceBusClient,
) -> None:
    async with client.get_queue_sender("orders") as sender:
        await sender.send_messages([ServiceBusMessage("renewed"), ServiceBusMessage("expires")])
    async with client.get_queue_receiver("orders") as receiver:
        renewed, expires = await _receive(receiver, 2)
        first_lock = renewed.locked_until_utc
        await asyncio.sleep(LOCK_S * 0.6)
        renewed_lock = await receiver.renew_message_lock(renewed)
        await asyncio.sleep(LOCK_S * 0.6)
        await receiver.complete_message(renewed)  # 1.2 lock durations after it was received
        with pytest.raises(MessageLockLostError):
            await receiver.complete_message(expires)
        (again,) = await _receive(receiver, 1)
        await receiver.complete_message(again)

    assert first_lock is not None
    assert renewed_lock > first_lock
    assert (str(again), again.delivery_count) == ("expires", 1)


async def test_a_scheduled_message_arrives_on_time_and_a_cancelled_one_never(
    client: ServiceBusClient,
) -> None:
    at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=3)
    async with client.get_queue_sender("orders") as sender:
        kept, cancelled = await sender.schedule_messages(
            [ServiceBusMessage("later"), ServiceBusMessage("never")], at
        )
        await sender.cancel_scheduled_messages(cancelled)
    async with client.get_queue_receiver("orders") as receiver:
        got = await _receive(receiver, 1, within_s=8)
        arrived = datetime.datetime.now(datetime.UTC)
        await receiver.complete_message(got[0])
        assert await _receive(receiver, 1, within_s=0.5) == []

    assert _texts(got) == ["later"]
    assert got[0].sequence_number == kept
    assert arrived >= at
    assert got[0].scheduled_enqueue_time_utc is not None


async def test_a_repeated_message_id_is_dropped(client: ServiceBusClient) -> None:
    async with client.get_queue_sender("orders") as sender:
        for body in ("first", "replay", "other"):
            message_id = "other" if body == "other" else "ws-1:42"
            await sender.send_messages(ServiceBusMessage(body, message_id=message_id))
    async with client.get_queue_receiver("orders") as receiver:
        got = await _receive(receiver, 2)
        assert await _receive(receiver, 1, within_s=0.5) == []

    assert _texts(got) == ["first", "other"]


async def test_a_wrong_key_is_refused(bus: LocalServiceBus) -> None:
    wrong = bus.connection_string("kairyu").replace("local-secret", "guessed")
    async with ServiceBusClient.from_connection_string(wrong, retry_total=0) as sb:
        with pytest.raises(ServiceBusAuthenticationError):
            async with sb.get_queue_sender("orders") as sender:
                await sender.send_messages(ServiceBusMessage("x"))


async def test_a_missing_entity_is_not_found(client: ServiceBusClient) -> None:
    with pytest.raises(MessagingEntityNotFoundError):
        async with client.get_queue_sender("no-such-queue") as sender:
            await sender.send_messages(ServiceBusMessage("x"))
    with pytest.raises(MessagingEntityNotFoundError):
        async with client.get_subscription_receiver("events", "no-such-sub") as receiver:
            await receiver.receive_messages(max_wait_time=1)


async def _send(bus: LocalServiceBus, *messages: ServiceBusMessage) -> None:
    async with (
        ServiceBusClient.from_connection_string(bus.connection_string("kairyu")) as sb,
        sb.get_queue_sender("orders") as sender,
    ):
        await sender.send_messages(list(messages))


async def _take(bus: LocalServiceBus, count: int) -> list[ServiceBusReceivedMessage]:
    async with (
        ServiceBusClient.from_connection_string(bus.connection_string("kairyu")) as sb,
        sb.get_queue_receiver("orders") as receiver,
    ):
        return await _receive(receiver, count)


async def test_a_restart_keeps_undelivered_messages(bus: LocalServiceBus) -> None:
    await _send(bus, ServiceBusMessage("before-1"), ServiceBusMessage("before-2"))
    bus.stop()
    bus.start()

    assert _texts(await _take(bus, 2)) == ["before-1", "before-2"]


async def test_a_restarted_process_keeps_messages_in_its_state_dir(tmp_path: Path) -> None:
    with LocalServiceBus(_entities(), keys=KEYS, state_dir=tmp_path) as first:
        await _send(first, ServiceBusMessage("durable", message_id="d-1"))
    with LocalServiceBus(_entities(), keys=KEYS, state_dir=tmp_path) as second:
        got = await _take(second, 1)

    assert _texts(got) == ["durable"]
    assert got[0].message_id == "d-1"
