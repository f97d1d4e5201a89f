"""The bus on a real nats-server: the set-up step, services that wait for it, dead letters,
outages, credentials and TLS. Following states is tested in test_state_stream.py; what both
transports must do alike (a write and a follower across a broker restart, among others) in
test_bus_contract.py."""

import asyncio
import dataclasses
import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from nats.js.api import DiscardPolicy
from nats.js.errors import NotFoundError

from kairyu_contracts.objectstate import ObjectKey
from kairyu_contracts.subjects import Subjects
from kairyu_core.bus import Bus, BusError, StreamSpec, setup
from kairyu_core.settings import NatsSettings
from kairyu_localenv import LocalNats, certs
from kairyu_localenv.processes import free_port
from kairyu_testing.bus import dead_letters
from kairyu_testing.plugin import unique


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def fresh_spec() -> StreamSpec:
    token = unique("s").removeprefix("s-")
    return StreamSpec(name=f"T{token}", subjects=Subjects(prefix=f"t{token}"))


def pod(name: str = "p") -> tuple[ObjectKey, dict[str, object]]:
    meta = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": "1"}
    return ObjectKey("Pod", "ns", name), {"metadata": meta}


async def test_setup_is_idempotent_and_updates_in_place(bus: Bus, nats_server: LocalNats) -> None:
    """The set-up step run again (every pod's sidecar, every 30 s) changes nothing; a new
    release's limits are applied to the existing streams without losing what they hold."""
    key, value = pod()
    await bus.put_state(key, value, digest="d1")
    await bus.create_streams()
    bigger = dataclasses.replace(bus.stream, state_max_bytes=2 * bus.stream.state_max_bytes)
    async with await Bus.connect(nats_server.url, name="release", stream=bigger) as release:
        await release.create_streams()
        info = await release.js.stream_info(bigger.state_stream)
    assert info.config.max_bytes == bigger.state_max_bytes
    assert info.state.messages == 1


async def test_a_service_waits_for_the_streams_until_the_setup_step_creates_them(
    nats_server: LocalNats, caplog: pytest.LogCaptureFixture
) -> None:
    """A service never creates a stream: it says which one is missing and who creates it, waits
    (not ready), and goes on once the set-up step has run."""
    caplog.set_level(logging.INFO, logger="kairyu_core.bus")
    spec = fresh_spec()
    async with await Bus.connect(nats_server.url, name="service", stream=spec) as service:
        with pytest.raises(BusError, match=r"kairyu_core\.bus\.setup"):
            await service.check_streams()
        waiting = asyncio.create_task(service.wait_for_streams())
        try:
            await until(lambda: not service.topology_ready)
            await asyncio.sleep(0.6)
            assert not waiting.done()
            with pytest.raises(NotFoundError):  # nothing created behind the step's back
                await service.js.stream_info(spec.state_stream)
            async with await Bus.connect(nats_server.url, name="setup", stream=spec) as admin:
                await admin.create_streams()
                await asyncio.wait_for(waiting, 10)
                assert service.topology_ready
                await admin.delete_streams()
        finally:
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
    assert f"stream {spec.state_stream} does not exist" in caplog.text


@pytest.mark.integration  # its own nats-server, started late
async def test_the_setup_sidecar_outlasts_a_nats_that_is_not_there_yet(tmp_path: Path) -> None:
    """The sidecar starts before NATS does (or during an outage): it keeps retrying instead of
    exiting, and sets the streams up as soon as NATS is there."""
    later = LocalNats(workdir=tmp_path, port=free_port())  # not started yet
    settings = NatsSettings(url=later.url, stream=unique("LATE").upper().replace("-", ""))
    sidecar = asyncio.create_task(setup.keep_set_up(settings, name="nats-setup", every_s=0.5))
    try:
        await asyncio.sleep(1.5)
        assert not sidecar.done(), sidecar.exception()
        later.start()  # blocks the loop a moment; the sidecar just retries later
        try:
            async with await Bus.connect(settings, name="look") as look:
                await asyncio.wait_for(look.wait_for_streams(), 30)
        finally:
            later.stop()
    finally:
        sidecar.cancel()
        await asyncio.gather(sidecar, return_exceptions=True)


async def test_the_setup_sidecar_brings_a_deleted_stream_back(nats_server: LocalNats) -> None:
    spec = fresh_spec()
    settings = NatsSettings(
        url=nats_server.url, stream=spec.name, subject_prefix=spec.subjects.prefix
    )
    sidecar = asyncio.create_task(setup.keep_set_up(settings, name="nats-setup", every_s=0.2))
    try:
        async with await Bus.connect(settings, name="look") as look:
            await asyncio.wait_for(look.wait_for_streams(), 10)
            await look.js.delete_stream(spec.state_stream)
            with pytest.raises(BusError):
                await look.check_streams()
            await asyncio.wait_for(look.wait_for_streams(), 10)
            await look.delete_streams()
    finally:
        sidecar.cancel()
        await asyncio.gather(sidecar, return_exceptions=True)


async def test_a_reconcile_given_up_on_is_dead_lettered_with_its_reason(bus: Bus) -> None:
    published = await bus.dead_letter_reconcile(
        "kairyu-planner", "team-a/phi.3", reason="UnknownPreset", error="no preset phi-9"
    )
    assert published.stream == bus.stream.dead_letter_stream
    ((subject, headers, payload),) = await dead_letters(bus)
    prefix = bus.stream.subjects.prefix
    assert subject == f"{prefix}.v1.deadletter.kairyu-planner.workspace.reconcile.team-a.phi_3"
    assert payload == b"team-a/phi.3"
    assert headers["Kairyu-Dead-Letter-Reason"] == "UnknownPreset"
    assert headers["Kairyu-Dead-Letter-Error"] == "no preset phi-9"
    assert headers["Kairyu-Service"] == "kairyu-planner"
    assert headers["Kairyu-Original-Subject"] == f"{prefix}.v1.workspace.reconcile.team-a.phi_3"


async def test_a_subject_outside_the_topology_is_refused(bus: Bus) -> None:
    """The event stream is gone: a publish to an event subject finds no stream of kairyu's."""
    subject = f"{bus.stream.subjects.prefix}.v1.workspace.observed.ns.ws"
    with pytest.raises(BusError, match="no kairyu stream"):
        await bus.publish_raw(subject, b"{}", headers={"Nats-Msg-Id": "x"})


async def test_a_flood_of_dead_letters_cannot_push_states_out(
    bus: Bus, nats_server: LocalNats
) -> None:
    """Any reconciling service may publish dead letters on its own subjects, so a leaked service
    password could publish many; they fill only their own stream, which then refuses new ones
    and keeps the earlier ones, and the states stay."""
    small = dataclasses.replace(bus.stream, dead_letter_max_bytes=64 * 1024)
    async with await Bus.connect(nats_server.url, name="flood", stream=small) as limited:
        await limited.create_streams()
        key, value = pod("kept")
        await limited.put_state(key, value, digest="d1")

        async def letter(n: int) -> None:
            subject = small.subjects.dead_letter("kairyu-deployer", f"kairyu.v1.x.y.ns.w{n}")
            await limited.publish_raw(subject, b"x" * 1024, headers={"Nats-Msg-Id": f"f{n}"})

        # 100 KiB of dead letters on distinct subjects, > the 64 KiB stream, sent at once: a
        # refused one is retried for ~15 s (the server answers "unavailable") before it fails.
        outcomes = await asyncio.gather(*(letter(n) for n in range(100)), return_exceptions=True)
        refused = sum(isinstance(o, BusError) for o in outcomes)
        states = await limited.js.stream_info(small.state_stream)
        letters = await limited.js.stream_info(small.dead_letter_stream)
    assert refused > 0
    assert states.state.messages == 1
    assert letters.state.first_seq == 1
    assert letters.config.discard == DiscardPolicy.NEW


def printed(exc: BaseException) -> str:
    """The messages Python prints for an uncaught exception and its chain (not the source)."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        parts += traceback.format_exception_only(current)
        suppressed = current.__suppress_context__
        current = current.__cause__ or (None if suppressed else current.__context__)
    return "".join(parts)


async def test_credentials_never_reach_the_logs(
    nats_server: LocalNats, caplog: pytest.LogCaptureFixture
) -> None:
    """A URL with user:password (as the chart used to write it) is shown redacted on disconnect,
    reconnect and a failed start, in the log and in the error a service dies with."""
    secret = "s3cr3t-nats-password"
    url = nats_server.url.replace("nats://", f"nats://kairyu-deployer:{secret}@")
    caplog.set_level(logging.INFO, logger="kairyu_core.bus")
    bus = await Bus.connect(url, name="redaction")
    try:
        nats_server.restart()
        await until(lambda: "reconnected to" in caplog.text, timeout=20)
    finally:
        await bus.close()
    with pytest.raises(BusError) as failed:
        # A connection NATS refuses is retried for ever (NATS may start later); a URL nats-py
        # cannot use ends the start at once, with the URL in the error.
        await Bus.connect(f"nats://kairyu-deployer:{secret}@127.0.0.1:99999", name="x")
    shown = caplog.text + printed(failed.value)
    assert "disconnected from" in caplog.text
    assert secret not in shown
    assert "kairyu-deployer:" not in shown


async def test_tls_with_a_ca_bundle_and_a_client_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """tls:// with kairyu's CA bundle and a client certificate, against a server that requires
    both; without the client certificate the same server refuses the connection."""
    ca = certs.make_ca(tmp_path, "nats-ca")
    serving = certs.issue(ca, tmp_path, name="server", common_name="nats", hosts=("127.0.0.1",))
    client = certs.issue(ca, tmp_path, name="client", common_name="kairyu-deployer")
    config = (
        f'tls {{ cert_file: "{serving.cert}", key_file: "{serving.key}", '
        f'ca_file: "{ca.cert}", verify: true }}\n'
    )
    with LocalNats(config=config, tls=True) as server:
        settings = NatsSettings(
            url=server.url,
            tls_ca_file=ca.cert,
            tls_cert_file=client.cert,
            tls_key_file=client.key,
            stream=unique("TLS").upper().replace("-", ""),
        )
        async with await Bus.connect(settings, name="tls") as secure:
            await secure.create_streams()
            key, value = pod()
            assert (await secure.put_state(key, value, digest="d1")).sequence == 1
        # The server requires the client certificate: without it no connection comes up (the
        # bus keeps trying, as for any NATS that is not there yet), and the log says why.
        anonymous = settings.model_copy(update={"tls_cert_file": None, "tls_key_file": None})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(Bus.connect(anonymous, name="no-cert"), 3)
        assert "certificate required" in caplog.text


async def test_a_jetstream_that_does_not_answer_is_waited_for_not_fatal(tmp_path: Path) -> None:
    """An account without JetStream answers the JetStream API the way a NATS whose JetStream is
    not up yet does (just after a restart): not at all. That is an outage to wait for, a BusError
    (which a service and the set-up sidecar retry, not ready meanwhile), not an error that ends a
    service or the planner's webhook with it."""
    server = LocalNats(
        workdir=tmp_path,
        config="accounts { PLAIN: { users: [{user: plain, password: plainpass}] } }",
    )
    server.start()
    try:
        url = server.url.replace("nats://", "nats://plain:plainpass@")
        bus = await Bus.connect(url, name="no-jetstream")
        try:
            with pytest.raises(BusError, match="JetStream is not available"):
                await bus.check_streams()
            with pytest.raises(BusError, match="JetStream is not available"):
                await bus.create_streams()
        finally:
            await bus.close()
    finally:
        server.stop()
