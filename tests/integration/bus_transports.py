"""The bus's two transports behind one face, for the suites that must hold on both.

A `Transport` is a running broker of one transport (NATS JetStream, or the local Service Bus
endpoint) with kairyu's streams or entities on it. It connects a service's bus (`follower`),
reads that transport's dead letters (`dead_letters`), says where it set aside a state message a
follower could not read (`set_aside`), stops and starts its broker, and says how a follower in
another process connects (`spec`, read by `connect` there: state_follower.py). `Writer` plays the
watcher on either: it keeps its latest values, writes them, and on Service Bus answers followers'
snapshot requests from them.

test_bus_contract.py runs its suite on both; test_servicebus_bus.py uses the Service Bus parts for
what only Service Bus does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver

from kairyu_contracts.objectstate import JSON, Kind, ObjectKey, content_digest, trim
from kairyu_contracts.subjects import Subjects
from kairyu_core.bus import Bus, StateBus, StreamSpec
from kairyu_core.bus.servicebus import ServiceBusBus, properties_of
from kairyu_core.bus.servicebus_topology import servicebus_topology
from kairyu_localenv import LocalNats
from kairyu_localenv.servicebus_process import ServiceBusProcess
from kairyu_testing.bus import dead_letters as nats_dead_letters

KEYS = {"kairyu": "local-secret"}
# Short, so that a session the endpoint still holds for a connection it lost (a restart, a
# follower SIGKILLed) is free again within the test, yet several SDK round trips long on a loaded
# 2-core machine.
LOCK_S = 6
SERVICEBUS_STREAM = "kairyu"
SERVICEBUS_TOPOLOGY = servicebus_topology(
    StreamSpec(name=SERVICEBUS_STREAM), lock_duration_s=LOCK_S
)
T = TypeVar("T")


def pod(
    name: str, *, phase: str = "Pending", version: int = 1, workspace: str = "ws", uid: str = ""
) -> JSON:
    """A trimmed Pod in namespace `ns` of the Workspace `workspace` (uid: `uid-<name>`)."""
    return trim(
        "Pod",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "ns",
                "uid": uid or f"uid-{name}",
                "resourceVersion": str(version),
                "labels": {"kaito.sh/workspace": workspace},
            },
            "status": {"phase": phase},
        },
    )


async def until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Return once `predicate()` holds; fail the test if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def eventually(probe: Callable[[], Awaitable[list[T]]], timeout: float = 15.0) -> list[T]:
    """What `probe()` finds, once it finds anything; fail the test if it does not in time."""
    deadline = time.monotonic() + timeout
    while not (found := await probe()):
        assert time.monotonic() < deadline, "nothing found in time"
        await asyncio.sleep(0.2)
    return found


async def receive(receiver: ServiceBusReceiver, count: int) -> list[ServiceBusReceivedMessage]:
    """Up to `count` messages from `receiver`, waiting at most 10 s for them."""
    got: list[ServiceBusReceivedMessage] = []
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        got += await receiver.receive_messages(max_message_count=count, max_wait_time=0.5)
    return got


@contextlib.asynccontextmanager
async def running(work: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """`work` as a task while in the block; cancelled (and awaited) at its end."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Writer:
    """The watcher's part: its latest values, what it writes, and its snapshots' source."""

    def __init__(self, bus: StateBus) -> None:
        self.bus = bus
        self.values: dict[ObjectKey, tuple[JSON, str, str | None]] = {}

    def values_of(self, kind: Kind) -> dict[ObjectKey, tuple[JSON, str, str | None]]:
        return {key: held for key, held in self.values.items() if key.kind == kind}

    def expected(self, kind: Kind = "Pod") -> dict[ObjectKey, JSON]:
        """What a follower's view of `kind` must end with: the latest value of each object."""
        return {key: value for key, (value, _, _) in self.values_of(kind).items()}

    @contextlib.asynccontextmanager
    async def answering(self) -> AsyncIterator[Writer]:
        """Answer followers' snapshot requests from these values while in the block (as the
        watcher does on Service Bus; on NATS there is nothing to answer)."""
        async with running(self.bus.serve_snapshots(self.values_of)):
            yield self

    async def put(self, value: JSON, kind: Kind = "Pod") -> ObjectKey:
        key = ObjectKey.of(kind, value)
        digest = content_digest(value)
        self.values[key] = (value, digest, None)
        await self.bus.put_state(key, value, digest=digest)
        return key

    async def delete(self, key: ObjectKey) -> None:
        value, _, _ = self.values.pop(key)
        await self.bus.delete_state(key, uid=value["metadata"]["uid"])


@dataclass(frozen=True)
class DeadLetter:
    """A reconcile given up on, as either transport records it."""

    service: str
    key: str
    reason: str
    error: str


async def connect(spec: dict[str, Any], service: str) -> StateBus:
    """A bus for `service` ("deployer", "watcher") on the broker `spec` describes (`Transport`)."""
    if spec["transport"] == "nats":
        stream = StreamSpec(name=spec["stream"], subjects=Subjects(prefix=spec["prefix"]))
        return await Bus.connect(spec["url"], name=service, stream=stream)
    topology = servicebus_topology(
        StreamSpec(name=spec["stream"]), lock_duration_s=spec["lock_duration_s"]
    )
    return await ServiceBusBus.connect(
        spec["connection_string"], service=service, topology=topology
    )


class Transport(ABC):
    """A broker of one transport, with kairyu's streams or entities on it."""

    name: str
    spec: dict[str, Any]
    """How a bus connects to it (JSON: a follower process is given it)."""
    writer: Writer
    """The watcher, once a test's fixture runs it (`writing`)."""

    @contextlib.asynccontextmanager
    async def follower(self, service: str) -> AsyncIterator[StateBus]:
        """A bus of its own for `service` (one of the kind's readers), closed after."""
        bus = await connect(self.spec, service)
        try:
            yield bus
        finally:
            await bus.close()

    @abstractmethod
    def writing(self) -> contextlib.AbstractAsyncContextManager[Writer]:
        """The watcher's bus, as a `Writer`."""

    @abstractmethod
    async def dead_letters(self) -> list[DeadLetter]:
        """The reconciles given up on so far, where this transport records them."""

    @abstractmethod
    async def send_unreadable(self, key: ObjectKey) -> None:
        """A message on `key`'s state that no follower can read (its value is not JSON)."""

    @abstractmethod
    async def set_aside(self, service: str, caplog: pytest.LogCaptureFixture) -> list[str]:
        """What `service`'s follower set aside as unreadable, and why, where it is documented."""

    @abstractmethod
    def stop_broker(self) -> None:
        """Stop the broker; what it stored stays for `start_broker`."""

    @abstractmethod
    def start_broker(self) -> None:
        """Start the stopped broker again on the same address (from the main thread)."""


class NatsTransport(Transport):
    """The session's nats-server, with the test's own streams (the `bus` fixture's)."""

    name = "nats"

    def __init__(self, server: LocalNats, bus: Bus) -> None:
        self.server = server
        self.bus = bus
        self.spec = {
            "transport": "nats",
            "url": server.url,
            "stream": bus.stream.name,
            "prefix": bus.stream.subjects.prefix,
        }

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[Writer]:
        yield Writer(self.bus)  # the `bus` fixture's connection: it closes it

    async def dead_letters(self) -> list[DeadLetter]:
        """The messages of the KAIRYU_DEADLETTER stream (the test's own)."""
        return [
            DeadLetter(
                service=headers["Kairyu-Service"],
                key=payload.decode(),
                reason=headers["Kairyu-Dead-Letter-Reason"],
                error=headers["Kairyu-Dead-Letter-Error"],
            )
            for _, headers, payload in await nats_dead_letters(self.bus, wait=0.5)
        ]

    async def send_unreadable(self, key: ObjectKey) -> None:
        subject = self.bus.stream.subjects.states_of(key.kind).removesuffix(">")
        await self.bus.publish_raw(
            f"{subject}{key.namespace}.{key.name}",
            b"{not json",
            headers={"Nats-Msg-Id": f"unreadable-{key.name}"},
        )

    async def set_aside(self, service: str, caplog: pytest.LogCaptureFixture) -> list[str]:
        """NATS skips it with a warning: nothing else keeps it (the stream holds it until the
        object's next state)."""
        return [
            record.getMessage()
            for record in caplog.records
            if record.levelno == logging.WARNING and "malformed state" in record.getMessage()
        ]

    def stop_broker(self) -> None:
        self.server.process.stop()

    def start_broker(self) -> None:
        self.server.start(keep_port=True)


class ServiceBusTransport(Transport):
    """The local Service Bus endpoint as a process of its own, with exactly kairyu's entities."""

    name = "servicebus"

    def __init__(self, endpoint: ServiceBusProcess) -> None:
        self.endpoint = endpoint
        self.connection_string = endpoint.connection_string("kairyu")
        self.spec = {
            "transport": "servicebus",
            "connection_string": self.connection_string,
            "stream": SERVICEBUS_STREAM,
            "lock_duration_s": LOCK_S,
        }

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[Writer]:
        async with self.follower("watcher") as bus:
            yield Writer(bus)

    async def dead_letters(self) -> list[DeadLetter]:
        """The messages of the `<stream>-deadletters` queue, peeked (they stay there)."""
        async with (
            ServiceBusClient.from_connection_string(self.connection_string) as client,
            client.get_queue_receiver(SERVICEBUS_TOPOLOGY.dead_letters.name) as receiver,
        ):
            letters = await receiver.peek_messages(max_message_count=100)
        found = []
        for letter in letters:
            properties = properties_of(letter)
            found.append(
                DeadLetter(
                    service=properties["kairyu-service"],
                    key=str(letter),
                    reason=properties["kairyu-dead-letter-reason"],
                    error=properties["kairyu-dead-letter-error"],
                )
            )
        return found

    async def send_unreadable(self, key: ObjectKey) -> None:
        """Sent as the watcher would send a state, in the kind's session, but its body is not
        JSON."""
        async with (
            ServiceBusClient.from_connection_string(self.connection_string) as client,
            client.get_topic_sender(SERVICEBUS_TOPOLOGY.topic_of(key.kind).name) as sender,
        ):
            await sender.send_messages(
                ServiceBusMessage(
                    b"{not json",
                    application_properties={
                        "to": "*",
                        "kairyu-kind": key.kind,
                        "kairyu-namespace": key.namespace,
                        "kairyu-name": key.name,
                    },
                    session_id=key.kind,
                    message_id=f"unreadable-{key.name}",
                )
            )

    async def set_aside(self, service: str, caplog: pytest.LogCaptureFixture) -> list[str]:
        """The follower dead-letters it on its subscription, with why (`reason: description`)."""
        subscription = SERVICEBUS_TOPOLOGY.subscription(service, "Pod")
        async with (
            ServiceBusClient.from_connection_string(self.connection_string) as client,
            client.get_subscription_receiver(
                subscription.topic, subscription.name, sub_queue=ServiceBusSubQueue.DEAD_LETTER
            ) as receiver,
        ):
            letters = await receiver.peek_messages(max_message_count=10)
        return [
            f"{letter.message_id}: {letter.dead_letter_reason}: "
            f"{letter.dead_letter_error_description}"
            for letter in letters
        ]

    def stop_broker(self) -> None:
        self.endpoint.process.stop()  # SIGTERM: it writes its messages to its state directory

    def start_broker(self) -> None:
        self.endpoint.start()
