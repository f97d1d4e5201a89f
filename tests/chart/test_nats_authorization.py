"""The chart's NATS identities against a real nats-server running the rendered authorization.

The `authorization` block of the production values is loaded by nats-server as docs/chart.md says,
with the passwords in its environment. The admin identity sets up the streams (what each pod's
nats-setup sidecar does); each service then works through kairyu's own Bus with the settings the
chart gives it (the watcher writes states, every service follows the kinds `FOLLOWS` lists for
it, the reconciling services record dead letters), and a permission matrix checks, with nats-py
directly, what each identity must not do. The server reports a refused publish or subscription
asynchronously (an -ERR naming the subject), not as a failed call, so the matrix collects those.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator

import nats
import pytest
from helm import CHART, documents, render
from pydantic import SecretStr

from kairyu_contracts.objectstate import CLUSTER_SCOPED, JSON, KINDS, Kind, ObjectKey
from kairyu_contracts.subjects import Subjects
from kairyu_core.bus import FOLLOWS, Bus, Change, Snapshot, topology
from kairyu_core.bus.setup import set_up
from kairyu_core.settings import NatsSettings
from kairyu_localenv import LocalNats

pytestmark = pytest.mark.integration
SERVICES = topology.SERVICES
IDENTITIES = ("admin", *SERVICES)
STREAM = "KAIRYU"  # the base name; no stream of this bare name is used any more
STATE_STREAM = f"{STREAM}_STATE"
DEAD_LETTER_STREAM = f"{STREAM}_DEADLETTER"
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
        asyncio.run(set_up(settings("admin", local), name="kairyu-nats-setup"))
        yield local


def settings(identity: str, server: LocalNats) -> NatsSettings:
    """What the chart's environment gives a pod's container of this identity."""
    user = f"kairyu-{identity}"
    return NatsSettings(
        url=server.url,
        user=user,
        password=SecretStr(password(identity)),
        inbox_prefix=f"_INBOX.{user}",
    )


@pytest.mark.parametrize("identity", SERVICES)
async def test_each_service_finds_the_streams_and_records_only_its_dead_letters(
    server: LocalNats, identity: str
) -> None:
    """Through its own identity each service sees that the streams are there (it may not create
    them), and each reconciling service records a reconcile it gave up on."""
    async with await Bus.connect(settings(identity, server), name=f"kairyu-{identity}") as bus:
        await asyncio.wait_for(bus.wait_for_streams(), 10)
        assert bus.topology_ready
        if identity in topology.RECONCILERS:
            key = f"ml/ws-{uuid.uuid4().hex[:8]}"
            published = await bus.dead_letter_reconcile(
                topology.identity(identity), key, reason="Refused", error="cannot"
            )
            assert published.stream == DEAD_LETTER_STREAM
            assert not published.duplicate


def state_key(kind: Kind) -> ObjectKey:
    namespace = CLUSTER_SCOPED if kind in ("Node", "NodeClaim") else "ml"
    return ObjectKey(kind, namespace, f"{kind.lower()}-{uuid.uuid4().hex[:8]}")


def state_of(key: ObjectKey, version: str = "1") -> JSON:
    meta = {"name": key.name, "uid": f"uid-{key.name}", "resourceVersion": version}
    if key.namespace != CLUSTER_SCOPED:
        meta["namespace"] = key.namespace
    return {"metadata": meta}


async def test_the_setup_step_creates_the_streams(server: LocalNats) -> None:
    async with await Bus.connect(settings("admin", server), name="kairyu-nats-setup") as admin:
        info = await admin.js.stream_info(STATE_STREAM)
        letters = await admin.js.stream_info(DEAD_LETTER_STREAM)
    assert info.config.subjects == ["kairyu.v1.state.>"]
    assert info.config.max_msgs_per_subject == 1
    assert letters.config.subjects == ["kairyu.v1.deadletter.>"]


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


@pytest.mark.parametrize("identity", topology.RECONCILERS)
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
    reconcile = SUBJECTS.reconcile("ml", "ws")
    publish = [
        # The event stream and its durable consumers are gone: nobody may bring them back.
        f"$JS.API.STREAM.CREATE.{STREAM}",
        f"$JS.API.CONSUMER.CREATE.{STREAM}.{own}",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.{own}",
        "kairyu.v1.workspace.observed.ml.ws",
        "kairyu.v1.state.secret.ml.ws",  # not a kind of the topology, not even for the watcher
        SUBJECTS.dead_letter(other, reconcile),
    ]
    # Nobody deletes, purges or reads a stream directly, or reads the dead letters.
    for stream in (STATE_STREAM, DEAD_LETTER_STREAM):
        publish += [
            f"$JS.API.STREAM.DELETE.{stream}",
            f"$JS.API.STREAM.PURGE.{stream}",
            f"$JS.API.STREAM.MSG.DELETE.{stream}",
            f"$JS.API.STREAM.MSG.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}",
            f"$JS.API.CONSUMER.DELETE.{stream}.{own}",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{own}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{own}",
        ]
    publish.append(f"$JS.API.CONSUMER.CREATE.{DEAD_LETTER_STREAM}.{own}.kairyu.v1.deadletter.>")
    # The state stream: nobody follows every kind at once, and an ordered consumer is created
    # only with its filter in the subject, for a kind the identity follows (FOLLOWS; the admin
    # follows none).
    create = f"$JS.API.CONSUMER.CREATE.{STATE_STREAM}"
    publish += [
        f"$JS.API.DIRECT.GET.{STATE_STREAM}.kairyu.v1.state.workspace.ml.ws",
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
        for stream in (STATE_STREAM, DEAD_LETTER_STREAM):
            publish += [f"$JS.API.STREAM.CREATE.{stream}", f"$JS.API.STREAM.UPDATE.{stream}"]
    if identity != "watcher":
        publish += ["kairyu.v1.state.workspace.ml.ws", "kairyu.v1.state.node._.n1"]
    if identity not in topology.RECONCILERS:
        publish.append(SUBJECTS.dead_letter(own, reconcile))
    subscribe = [
        "_INBOX.>",
        f"_INBOX.{other}.>",
        "kairyu.v1.workspace.>",
        SUBJECTS.all_dead_letters,
        "$JS.API.>",
        f"$JS.ACK.{STATE_STREAM}.>",
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


@pytest.mark.parametrize("auth", ["true", "false"])
def test_nats_setup_is_a_native_sidecar_that_keeps_the_streams_in_place(auth: str) -> None:
    """Each pod's nats-setup, with or without NATS authorization, is the one component that
    creates the streams: it runs for the pod's life (`restartPolicy: Always` in initContainers)
    and sets them up again periodically, so a deleted stream comes back without a pod restart (a
    restarted service container does not re-run init containers); it has no startup probe, which
    would hold back the service's start, and the planner's webhook with it, while NATS is down.
    Only it gets the admin credentials. The services' startup and liveness probes look at
    /healthz, not at NATS."""
    rendered = documents(render(None, "--set", f"global.nats.auth.enabled={auth}"))
    deployments = [d for d in rendered if d["kind"] == "Deployment"]
    assert len(deployments) == len(SERVICES)
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        (setup_container,) = pod["initContainers"]
        assert setup_container["name"] == "nats-setup"
        assert setup_container["restartPolicy"] == "Always"
        assert "startupProbe" not in setup_container
        assert setup_container["command"] == [
            "python", "-m", "kairyu_core.bus.setup", "--every", "30"
        ]  # fmt: skip
        users = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for c in [setup_container, *pod["containers"]]
            for e in c["env"]
            if e["name"] == "KAIRYU_NATS__USER"
        }
        assert ("kairyu-admin-nats" in users) == (auth == "true")
        for container in pod["containers"]:
            assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
