"""The bus contract, one suite on both transports: NATS JetStream and Azure Service Bus (issue 20).

Every test runs once per `transport` (bus_transports.py): the session's nats-server with the
test's own streams, or the local Service Bus endpoint as a process of its own with kairyu's
entities. A `Writer` plays the watcher (on Service Bus it also answers snapshot requests; on NATS
that waits for ever), and followers are services that read Pods. What a user would notice must be
the same on both:

- a follower's view ends with each object's latest value, and the values it sees of one object
  never go back (order per object), also when it starts while changes flow;
- an informer keeps a service's view current and wakes the Workspace a change concerns;
- a retried publish (the same state, the same tombstone) reaches a follower once;
- a reconcile's `TemporaryError` is retried after its delay, a `PermanentError` ends as a dead
  letter with its reason, key and service, readable where the transport keeps them;
- a follower SIGKILLed while changes flow, started again after objects were deleted, ends with
  the writer's view;
- after a broker restart (the same store) the writer's new changes reach a follower that followed
  throughout, and its view converges;
- a state message a follower cannot read is set aside where the transport documents it (NATS: a
  warning; Service Bus: the subscription's dead-letter sub-queue) and the follower goes on.

Where the transports differ, the suite allows it: a NATS follower that lags may skip a value the
state stream already replaced (it keeps the latest per object), so order is asserted, not that
every value arrives; on Service Bus each subscription has one session, so two followers of one
kind are two services, and a killed follower's session is free only once its lock expired.
Transport-specific behaviour stays in test_bus.py, test_state_stream.py and test_servicebus_bus.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from bus_transports import (
    KEYS,
    SERVICEBUS_TOPOLOGY,
    DeadLetter,
    NatsTransport,
    ServiceBusTransport,
    Transport,
    eventually,
    pod,
    running,
    until,
)

from kairyu_contracts.objectstate import JSON, ObjectKey
from kairyu_core.bus import Change, PermanentError, Snapshot, StateBus, TemporaryError
from kairyu_core.informing import Informer
from kairyu_core.service import Controlled, until_first_ends
from kairyu_core.view import View
from kairyu_localenv.processes import ManagedProcess
from kairyu_localenv.servicebus_process import ServiceBusProcess
from kairyu_localenv.servicebus_topology_entities import entities_json
from kairyu_testing.bus import collect_sdk_garbage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

FOLLOWER = Path(__file__).with_name("state_follower.py")


@pytest.fixture(params=["nats", "servicebus"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Transport]:
    """A broker of each transport (the session's nats-server, or an endpoint process)."""
    if request.param == "nats":
        yield NatsTransport(request.getfixturevalue("nats_server"), request.getfixturevalue("bus"))
        return
    entities = entities_json(SERVICEBUS_TOPOLOGY)
    with ServiceBusProcess(entities, keys=KEYS, workdir=tmp_path / "servicebus") as endpoint:
        yield ServiceBusTransport(endpoint)
    collect_sdk_garbage()


@pytest.fixture
async def transport(broker: Transport) -> AsyncIterator[Transport]:
    """The broker with the watcher on it: `transport.writer`, answering snapshot requests."""
    async with broker.writing() as writer, writer.answering():
        broker.writer = writer
        yield broker


class Following:
    """What a follower of Pods got (its snapshots and changes, in order) and the view they make."""

    def __init__(self) -> None:
        self.items: list[Snapshot | Change] = []
        self.view = View(["Pod"])

    @property
    def synced(self) -> bool:
        return any(isinstance(item, Snapshot) for item in self.items)

    @property
    def changes(self) -> list[Change]:
        return [item for item in self.items if isinstance(item, Change)]

    def holds(self, expected: dict[ObjectKey, JSON]) -> bool:
        """Whether the view is exactly `expected`."""
        return len(self.view) == len(expected) and all(
            self.view.get(key) == value for key, value in expected.items()
        )

    async def run(self, bus: StateBus) -> None:
        async for item in bus.follow_state("Pod"):
            self.items.append(item)
            if isinstance(item, Snapshot):
                self.view.replace("Pod", item.values)
            else:
                self.view.apply(item.key, item.value)


@contextlib.asynccontextmanager
async def following(bus: StateBus) -> AsyncIterator[Following]:
    seen = Following()
    async with running(seen.run(bus)):
        yield seen


def version_of(value: JSON | None) -> int | None:
    return None if value is None else int(value["metadata"]["resourceVersion"])


async def test_a_followers_view_ends_with_the_last_values_each_objects_in_the_order_written(
    transport: Transport,
) -> None:
    """Many values of a few objects, interleaved, with a follower that starts while they flow."""
    writer = transport.writer
    names = [f"p{i}" for i in range(5)]
    draw = random.Random(20)  # a fixed interleaving
    version = 0

    async def write_until(enough: Callable[[], bool]) -> None:
        nonlocal version
        while not enough():
            version += 1
            await writer.put(pod(draw.choice(names), phase=f"v{version}", version=version))
            await asyncio.sleep(0.01)  # a flow, not a burst that ends before the follower starts

    await write_until(lambda: version == 10)
    async with transport.follower("deployer") as bus, following(bus) as seen:
        await asyncio.wait_for(write_until(lambda: len(seen.changes) >= 20), 20)
        names.remove("p4")
        await writer.delete(ObjectKey("Pod", "ns", "p4"))
        await asyncio.wait_for(write_until(lambda: len(seen.changes) >= 40), 20)
        await until(lambda: seen.holds(writer.expected()))

    seen_versions: dict[str, list[int | None]] = {}
    for item in seen.items:
        updates = item.values.items() if isinstance(item, Snapshot) else [(item.key, item.value)]
        for key, value in updates:
            seen_versions.setdefault(key.name, []).append(version_of(value))
    for name, versions in seen_versions.items():
        live = [v for v in versions if v is not None]
        assert live == sorted(live), f"{name}'s values went back: {versions}"
    assert seen_versions["p4"][-1] is None  # its tombstone came after its values


async def test_an_informer_keeps_the_view_current_and_wakes_the_workspace_concerned(
    transport: Transport,
) -> None:
    await transport.writer.put(pod("a", workspace="wa"))
    view = View(["Pod"])
    woken: list[str] = []
    async with (
        transport.follower("deployer") as bus,
        running(Informer(bus, view, woken.extend).run()),
    ):
        await until(lambda: len(view) == 1)
        assert woken == ["ns/wa"]
        await transport.writer.put(pod("a", workspace="wa", phase="Running", version=2))
        await until(lambda: view.owned("Pod", "ns/wa")[0]["status"]["phase"] == "Running")
        assert woken == ["ns/wa", "ns/wa"]


async def test_a_state_or_tombstone_published_twice_reaches_a_follower_once(
    transport: Transport,
) -> None:
    """A retried publish has the same id (uid and resourceVersion; uid for a tombstone)."""
    writer = transport.writer
    async with transport.follower("deployer") as bus, following(bus) as seen:
        await until(lambda: seen.synced)
        a = await writer.put(pod("a", version=7))
        await writer.bus.put_state(a, pod("a", version=7), digest=writer.values[a][1])
        b = await writer.put(pod("b"))
        await writer.delete(b)
        await writer.bus.delete_state(b, uid="uid-b")
        c = await writer.put(pod("c"))
        await until(lambda: seen.view.get(c) is not None)
    assert [(change.key, version_of(change.value)) for change in seen.changes] == [
        (a, 7),
        (b, 1),
        (b, None),
        (c, 1),
    ]


RETRY_DELAY_S = 1.5


async def test_a_temporary_error_is_retried_after_its_delay_a_permanent_one_dead_lettered(
    transport: Transport,
) -> None:
    """A service's controller over the transport (`Controlled`): its view, informer, controller
    and dead letters. The error is cut to 1024 characters on both transports."""
    loop = asyncio.get_running_loop()
    attempts: dict[str, list[float]] = {"ns/retried": [], "ns/refused": []}
    refusal = "no preset phi-9: " + "x" * 5000

    async def reconcile(key: str) -> float | None:
        attempts[key].append(loop.time())
        if key == "ns/retried" and len(attempts[key]) == 1:
            raise TemporaryError("the nodes are not ready yet", delay=RETRY_DELAY_S)
        if key == "ns/refused":
            raise PermanentError(refusal, reason="UnknownPreset")
        return None

    await transport.writer.put(pod("a", workspace="retried"))
    await transport.writer.put(pod("b", workspace="refused"))
    async with transport.follower("deployer") as bus:
        controlled = Controlled(
            bus, service="kairyu-deployer", kinds=["Pod"], reconcile=lambda _view: reconcile
        )
        async with running(until_first_ends(controlled.work())):
            await until(lambda: len(attempts["ns/retried"]) == 2, timeout=20)
            letters = await eventually(transport.dead_letters)
    first, second = attempts["ns/retried"]
    assert second - first >= RETRY_DELAY_S
    refused = DeadLetter(
        service="kairyu-deployer", key="ns/refused", reason="UnknownPreset", error=refusal[:1024]
    )
    assert letters == [refused]
    assert len(attempts["ns/refused"]) == 1  # given up: not retried until its next change


def _view_of(out: Path) -> dict[str, JSON] | None:
    """What the follower process last wrote (None before its first snapshot)."""
    try:
        held: dict[str, JSON] = json.loads(out.read_text())
    except FileNotFoundError:
        return None
    return held


def _version_in(out: Path, path: str) -> int:
    return version_of((_view_of(out) or {}).get(path)) or 0


def _by_path(expected: dict[ObjectKey, JSON]) -> dict[str, JSON]:
    return {key.path: value for key, value in expected.items()}


@pytest.mark.timeout(60)  # processes started and stopped, a lock to expire
async def test_a_follower_killed_while_changes_flow_ends_with_the_writers_view(
    transport: Transport, tmp_path: Path
) -> None:
    """SIGKILL, objects deleted while it is dead, started again: deleted ones gone from its view.

    On Service Bus the new process gets the subscription's session once the dead one's lock
    expired (LOCK_S), and drops the backlog it finds before its snapshot.
    """
    writer = transport.writer
    for i in range(10):
        await writer.put(pod(f"p{i}"))
    out = tmp_path / "view.json"

    def follower_process(name: str) -> ManagedProcess:
        return service_process(transport, name, ["follow", "deployer", str(out)], tmp_path)

    first = follower_process("follower-1")
    first.start()
    try:
        await until(lambda: _view_of(out) == _by_path(writer.expected()), timeout=20)
        stop = asyncio.Event()

        async def change() -> None:
            version = 1
            while not stop.is_set():
                version += 1
                for i in range(10):
                    await writer.put(pod(f"p{i}", phase=f"v{version}", version=version))

        changing = asyncio.create_task(change())
        try:
            await until(lambda: _version_in(out, "ns/p9") > 1)
            first.kill()  # SIGKILL while changes flow
        finally:
            stop.set()
            await changing
    finally:
        first.stop()
    for i in range(3):
        await writer.delete(ObjectKey("Pod", "ns", f"p{i}"))
    await writer.put(pod("p3", phase="Succeeded", version=10_000))
    out.unlink()

    second = follower_process("follower-2")
    second.start()
    try:
        await until(lambda: _view_of(out) == _by_path(writer.expected()), timeout=30)
    finally:
        second.stop()
    assert "ns/p0" not in (_view_of(out) or {})


def service_process(
    transport: Transport, name: str, args: list[str], log_dir: Path
) -> ManagedProcess:
    """state_follower.py as a process, told the bus in its environment (a key, on Service Bus)."""
    return ManagedProcess(
        name,
        [sys.executable, str(FOLLOWER), *args],
        log_dir=log_dir,
        env={"KAIRYU_TEST_BUS_SPEC": json.dumps(transport.spec)},
    )


@pytest.mark.timeout(60)  # processes started and stopped, a lock to expire
async def test_a_handler_killed_mid_reconcile_is_run_again_by_the_next_process(
    transport: Transport, tmp_path: Path
) -> None:
    """Nothing acknowledges a reconcile: the restarted service reconciles from its new view.

    The first process is SIGKILLed while its reconcile of the Workspace is under way; the next
    one, with nothing written to the bus meanwhile, reconciles that Workspace to the end.
    """
    await transport.writer.put(pod("p0", workspace="busy"))
    out, block = tmp_path / "reconciles.txt", tmp_path / "block"
    block.touch()
    args = ["reconcile", "deployer", str(out), str(block)]
    first = service_process(transport, "handler-1", args, tmp_path)
    first.start()
    try:
        await until(lambda: "started ns/busy" in _lines(out), timeout=30)
        first.kill()  # SIGKILL in the middle of the reconcile
    finally:
        first.stop()
    assert "done ns/busy" not in _lines(out)
    block.unlink()
    second = service_process(transport, "handler-2", args, tmp_path)
    second.start()
    try:
        await until(lambda: "done ns/busy" in _lines(out), timeout=30)
    finally:
        second.stop()
    assert _lines(out).count("started ns/busy") == 2


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


@pytest.mark.timeout(60)  # a broker stopped and started, its clients reconnecting
async def test_after_a_broker_restart_the_writers_changes_reach_the_follower(
    transport: Transport,
) -> None:
    """NATS restarts with the same store; the Service Bus endpoint process is SIGTERMed (it keeps
    its messages in its state directory) and started again on the same port."""
    writer = transport.writer
    for i in range(5):
        await writer.put(pod(f"p{i}"))
    async with transport.follower("deployer") as bus, following(bus) as seen:
        await until(lambda: seen.holds(writer.expected()))
        transport.stop_broker()
        # A write while the broker is down is retried until it is back (about 15 s at most).
        writing = asyncio.create_task(writer.put(pod("p0", phase="Running", version=2)))
        await asyncio.sleep(1.0)
        assert not writing.done(), writing
        transport.start_broker()
        await writing
        await writer.delete(ObjectKey("Pod", "ns", "p1"))
        await writer.put(pod("p5"))
        await until(lambda: seen.holds(writer.expected()), timeout=30)
    snapshots = [item for item in seen.items if isinstance(item, Snapshot)]
    assert len(snapshots) >= 2  # it followed across the restart, from a fresh snapshot


async def test_a_message_a_follower_cannot_read_is_set_aside_and_it_goes_on(
    transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    broken = ObjectKey("Pod", "ns", "broken")
    async with transport.follower("deployer") as bus, following(bus) as seen:
        await until(lambda: seen.synced)
        await transport.send_unreadable(broken)
        after = await transport.writer.put(pod("after"))
        await until(lambda: seen.view.get(after) is not None)
        set_aside = await eventually(lambda: transport.set_aside("deployer", caplog))
    assert [change.key for change in seen.changes] == [after]
    assert seen.view.get(broken) is None
    assert any("broken" in why for why in set_aside), set_aside
