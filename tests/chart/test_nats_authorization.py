"""The chart's NATS identities against a real nats-server running the rendered authorization.

The `authorization` block of the production values is loaded by nats-server as docs/chart.md says,
with the passwords in its environment. The admin identity sets up the streams and the consumers
(what each pod's nats-setup sidecar does); each service then works through kairyu's own
Bus with the settings the chart gives it (the watcher writes states, every service follows the
kinds `FOLLOWS` lists for it), and a permission matrix checks, with nats-py directly, what each
identity must not do. The server reports a refused publish or subscription
asynchronously (an -ERR naming the subject), not as a failed call, so the matrix collects those.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import nats
import pytest
from helm import CHART, documents, render
from pydantic import SecretStr

from kairyu_core.bus import (
    CONSUMED_BY,
    FOLLOWS,
    Bus,
    Change,
    Consumer,
    ConsumerSpec,
    Delivery,
    Handler,
    PermanentError,
    Snapshot,
)
from kairyu_core.bus.setup import set_up
from kairyu_core.events import (
    ALL_EVENTS,
    Event,
    NodesReady,
    PlanCreated,
    Subjects,
    WorkspaceDeleted,
    WorkspaceObserved,
    WorkspaceRef,
)
from kairyu_core.localenv import LocalNats
from kairyu_core.objectstate import CLUSTER_SCOPED, JSON, KINDS, Kind, ObjectKey
from kairyu_core.settings import NatsSettings

pytestmark = pytest.mark.integration
SERVICES = ("watcher", "planner", "provisioner", "deployer", "tuner")
IDENTITIES = ("admin", *SERVICES)
STREAM = "KAIRYU"
STATE_STREAM = f"{STREAM}_STATE"
SUBJECTS = Subjects(prefix="kairyu")


def password(identity: str) -> str:
    return f"pw-{identity}-0123456789"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalNats]:
    (config_map,) = [
        d
        for d in documents(render(CHART / "ci/production-values.yaml"))
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("nats-authorization")
    ]
    env = {f"KAIRYU_{i.upper()}_NATS_PASSWORD": password(i) for i in IDENTITIES}
    with LocalNats(config=config_map["data"]["authorization.conf"], env=env) as local:
        asyncio.run(set_up(settings("admin", local), list(CONSUMED_BY), name="kairyu-nats-setup"))
        yield local


def settings(identity: str, server: LocalNats) -> NatsSettings:
    """What the chart's environment gives a pod's container of this identity."""
    user = f"kairyu-{identity}"
    return NatsSettings(
        url=server.url,
        user=user,
        password=SecretStr(password(identity)),
        inbox_prefix=f"_INBOX.{user}",
        manage_topology=False,
    )


def ref() -> WorkspaceRef:
    uid = uuid.uuid4().hex[:8]
    return WorkspaceRef(
        namespace="ml", name=f"ws-{uid}", uid=uid, generation=1, resource_version="1"
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.1)


async def test_each_service_works_through_its_own_identity(server: LocalNats) -> None:
    """The watcher publishes, every consumer gets the event on its own consumer and settles it
    (the deployer by dead-lettering it), and the planner's plan reaches the provisioner."""
    workspace = ref()
    seen: dict[str, list[str]] = {s: [] for s in CONSUMED_BY}
    buses: list[Bus] = []
    consumers: list[tuple[Consumer, asyncio.Task[None]]] = []

    def handler(service: str) -> Handler:
        async def handle(event: Event, delivery: Delivery) -> None:
            if event.workspace.uid != workspace.uid:
                return
            seen[service].append(event.event_name)
            if service == "deployer":
                raise PermanentError("cannot deploy this", reason="Refused")

        return handle

    try:
        for service in CONSUMED_BY:
            bus = await Bus.connect(settings(service, server), name=f"kairyu-{service}")
            buses.append(bus)
            await bus.ensure_stream()  # checks, may not create
            consumer = Consumer(
                bus,
                ConsumerSpec.of_service(service, bus.stream.subjects),
                service=f"kairyu-{service}",
                events={e.event_name: e for e in ALL_EVENTS},
                handler=handler(service),
            )
            consumers.append((consumer, asyncio.create_task(consumer.run())))
        watcher = await Bus.connect(settings("watcher", server), name="kairyu-watcher")
        buses.append(watcher)
        await watcher.publish(WorkspaceObserved(workspace=workspace))
        planner = buses[list(CONSUMED_BY).index("planner")]
        await planner.publish(
            PlanCreated(
                workspace=workspace,
                instance_type="Standard_NC24ads_A100_v4",
                node_count=1,
                plan_digest="d1",
            )
        )

        async def everyone_saw_it() -> bool:
            observed = all(WorkspaceObserved.event_name in names for names in seen.values())
            return observed and PlanCreated.event_name in seen["provisioner"]

        await eventually(everyone_saw_it, 20)
        for bus, service in zip(buses, CONSUMED_BY, strict=False):

            async def settled(bus: Bus = bus, durable: str = f"kairyu-{service}") -> bool:
                return await bus.consumer_pending(durable) == (0, 0)

            await eventually(settled, 10)
    finally:
        for consumer, task in consumers:
            await consumer.stop(grace_s=1)
            task.cancel()
        for bus in buses:
            await bus.close()


def state_key(kind: Kind) -> ObjectKey:
    namespace = CLUSTER_SCOPED if kind in ("Node", "NodeClaim") else "ml"
    return ObjectKey(kind, namespace, f"{kind.lower()}-{uuid.uuid4().hex[:8]}")


def state_of(key: ObjectKey, version: str = "1") -> JSON:
    meta = {"name": key.name, "uid": f"uid-{key.name}", "resourceVersion": version}
    if key.namespace != CLUSTER_SCOPED:
        meta["namespace"] = key.namespace
    return {"metadata": meta}


async def test_the_setup_step_creates_the_state_stream(server: LocalNats) -> None:
    async with await Bus.connect(settings("admin", server), name="kairyu-nats-setup") as admin:
        info = await admin.js.stream_info(STATE_STREAM)
    assert info.config.subjects == ["kairyu.v1.state.>"]
    assert info.config.max_msgs_per_subject == 1


async def test_the_watcher_writes_and_deletes_states(server: LocalNats) -> None:
    """The watcher alone writes states, tombstones included (with their Nats-TTL header), and
    reads them back through an ordered consumer of its own (it follows every kind at start)."""
    key = state_key("Pod")
    async with await Bus.connect(settings("watcher", server), name="kairyu-watcher") as watcher:
        await watcher.put_state(key, state_of(key), digest="d1")
        follow = watcher.follow_state("Pod")
        try:
            first = await asyncio.wait_for(anext(follow), 10)
            assert isinstance(first, Snapshot)
            assert first.values[key] == state_of(key)
            await watcher.delete_state(key, uid=f"uid-{key.name}")
            change = await asyncio.wait_for(anext(follow), 10)
            assert change == Change(key, None, None)
        finally:
            await follow.aclose()


@pytest.mark.parametrize("identity", list(FOLLOWS))
async def test_each_service_follows_the_kinds_it_reads(server: LocalNats, identity: str) -> None:
    """Through its own identity each service gets a snapshot of every kind FOLLOWS lists for it,
    then the changes the watcher writes."""
    keys = {kind: state_key(kind) for kind in FOLLOWS[identity]}
    async with (
        await Bus.connect(settings("watcher", server), name="kairyu-watcher") as watcher,
        await Bus.connect(settings(identity, server), name=f"kairyu-{identity}") as bus,
    ):
        for key in keys.values():
            await watcher.put_state(key, state_of(key), digest="d1")

        async def follow(kind: Kind, key: ObjectKey) -> None:
            states = bus.follow_state(kind)
            try:
                first = await asyncio.wait_for(anext(states), 10)
                assert isinstance(first, Snapshot)
                assert first.values[key] == state_of(key)
                await watcher.put_state(key, state_of(key, "2"), digest="d2")
                change = await asyncio.wait_for(anext(states), 10)
                assert change == Change(key, state_of(key, "2"), "d2")
            finally:
                await states.aclose()

        await asyncio.gather(*(follow(kind, key) for kind, key in keys.items()))


@pytest.mark.parametrize("identity", list(CONSUMED_BY))
async def test_a_service_cannot_follow_a_kind_it_does_not_read(
    server: LocalNats, identity: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server refuses the ordered consumer's creation (its filter is in the subject), so the
    follower gets no snapshot and keeps trying; the refusal names the kind."""
    caplog.set_level(logging.WARNING, logger="kairyu_core.bus")
    others = [kind for kind in KINDS if kind not in FOLLOWS[identity]]
    assert others
    async with await Bus.connect(settings(identity, server), name=f"kairyu-{identity}") as bus:

        async def follow(kind: Kind) -> None:
            states = bus.follow_state(kind)
            try:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(anext(states), 2)
            finally:
                await states.aclose()

        await asyncio.gather(*(follow(kind) for kind in others))
    log = caplog.text.lower()
    for kind in others:
        assert f'kairyu.v1.state.{kind.lower()}.>"' in log, kind
    assert "permissions violation" in log


def denied_to(identity: str) -> tuple[list[str], list[str]]:
    """(subjects this identity must not publish to, subjects it must not subscribe to)."""
    own = f"kairyu-{identity}"
    other = "kairyu-planner" if identity != "planner" else "kairyu-deployer"
    publish = [
        f"$JS.API.STREAM.DELETE.{STREAM}",
        f"$JS.API.STREAM.PURGE.{STREAM}",
        f"$JS.API.STREAM.MSG.DELETE.{STREAM}",
        f"$JS.API.STREAM.MSG.GET.{STREAM}",
        f"$JS.API.DIRECT.GET.{STREAM}",
        f"$JS.API.CONSUMER.DELETE.{STREAM}.{other}",
        f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{other}",
        f"$JS.ACK.{STREAM}.{other}.1.7.7.1700000000000000000.0",
        SUBJECTS.dead_letter(other, SUBJECTS.of_event(WorkspaceObserved, "ml", "ws")),
    ]
    # The state stream: nobody deletes, purges, reads it directly or follows every kind at once,
    # and an ordered consumer is created only with its filter in the subject, for a kind the
    # identity follows (FOLLOWS; the admin follows none).
    create = f"$JS.API.CONSUMER.CREATE.{STATE_STREAM}"
    publish += [
        f"$JS.API.STREAM.DELETE.{STATE_STREAM}",
        f"$JS.API.STREAM.PURGE.{STATE_STREAM}",
        f"$JS.API.STREAM.MSG.DELETE.{STATE_STREAM}",
        f"$JS.API.STREAM.MSG.GET.{STATE_STREAM}",
        f"$JS.API.DIRECT.GET.{STATE_STREAM}",
        f"$JS.API.DIRECT.GET.{STATE_STREAM}.kairyu.v1.state.workspace.ml.ws",
        f"$JS.API.CONSUMER.DELETE.{STATE_STREAM}.{own}",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{STATE_STREAM}.{own}",
        f"$JS.API.CONSUMER.MSG.NEXT.{STATE_STREAM}.{own}",
        create,  # the filter only in the request, where permissions cannot see it
        f"{create}.{own}",
        f"{create}.{own}.kairyu.v1.state.>",
        *(
            f"{create}.{own}.kairyu.v1.state.{kind.lower()}.>"
            for kind in KINDS
            if kind not in FOLLOWS.get(identity, ())
        ),
    ]
    if identity != "admin":
        publish += [
            f"$JS.API.STREAM.CREATE.{STREAM}",
            f"$JS.API.STREAM.UPDATE.{STREAM}",  # a subject transform would forge events
            f"$JS.API.CONSUMER.CREATE.{STREAM}.{own}",  # its own, with a filter reading all
            f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.{own}",
            f"$JS.API.CONSUMER.INFO.{STREAM}.{other}",
            f"$JS.API.STREAM.CREATE.{STATE_STREAM}",
            f"$JS.API.STREAM.UPDATE.{STATE_STREAM}",
        ]
    if identity != "watcher":
        publish.append(SUBJECTS.of_event(WorkspaceDeleted, "ml", "ws"))
        publish += ["kairyu.v1.state.workspace.ml.ws", "kairyu.v1.state.node._.n1"]
    if identity != "planner":
        publish.append(SUBJECTS.of_event(PlanCreated, "ml", "ws"))
    if identity != "provisioner":
        publish.append(SUBJECTS.of_event(NodesReady, "ml", "ws"))
    subscribe = [
        "_INBOX.>",
        f"_INBOX.{other}.>",
        SUBJECTS.all_events,
        SUBJECTS.all_dead_letters,
        "$JS.API.>",
        f"$JS.ACK.{STREAM}.>",
        "kairyu.v1.state.>",
        "$JS.FC.>",
    ]
    return publish, subscribe


@pytest.mark.parametrize("identity", IDENTITIES)
async def test_an_identity_cannot_reach_beyond_its_own_rights(
    server: LocalNats, identity: str
) -> None:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    publish, subscribe = denied_to(identity)
    # Flow-control replies of the ordered consumers on the state stream (the server asks for one
    # when a follower falls behind; a refused reply would stall its deliveries).
    allowed = [] if identity == "admin" else [f"$JS.FC.{STATE_STREAM}.pod-0.7.1"]
    own = settings(identity, server)
    assert own.password is not None
    client = await nats.connect(
        server.url,
        user=own.user,
        password=own.password.get_secret_value(),
        error_cb=on_error,
        allow_reconnect=False,
    )
    try:
        for subject in [*allowed, *publish]:
            await client.publish(subject, b"{}")
        for subject in subscribe:
            await client.subscribe(subject)
        await client.flush()
        expected = len(publish) + len(subscribe)
        for _ in range(40):  # the server's -ERRs arrive after the flush's PONG
            if len(errors) >= expected:
                break
            await asyncio.sleep(0.05)
    finally:
        await client.close()
    refused = "\n".join(errors)
    still = [s for s in [*publish, *subscribe] if f'"{s.lower()}"' not in refused]
    assert still == [], f"{identity} may still use these subjects"
    assert [s for s in allowed if f'"{s.lower()}"' in refused] == []


def test_nats_setup_is_a_native_sidecar_that_keeps_the_topology_in_place() -> None:
    """Each pod's nats-setup runs for the pod's life (`restartPolicy: Always` in initContainers)
    and sets the topology up again periodically, so a deleted consumer comes back without a pod
    restart (a restarted service container does not re-run init containers); it has no startup
    probe, which would hold back the service's start, and the planner's webhook with it, while
    NATS is down. The services' startup and liveness probes look at /healthz, not at NATS."""
    deployments = [d for d in documents(render()) if d["kind"] == "Deployment"]
    assert len(deployments) == 5
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        (setup_container,) = pod["initContainers"]
        service = pod["containers"][0]["name"]
        assert setup_container["name"] == "nats-setup"
        assert setup_container["restartPolicy"] == "Always"
        assert "startupProbe" not in setup_container
        command = setup_container["command"]
        assert command[:3] == ["python", "-m", "kairyu_core.bus.setup"]
        assert command[command.index("--every") + 1] == "30"
        assert command[-1] == service
        for container in pod["containers"]:
            assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
