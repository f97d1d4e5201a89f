"""The chart's per-service NATS users against a real nats-server: each publishes only its events.

The rendered `authorization` block is loaded by nats-server as the chart documents it, with the
passwords from the environment; the services' own Bus (kairyu_core.bus) connects with the chart's
credentials URL form. A refused publish is seen with nats-py directly, as the server reports a
permissions violation asynchronously rather than failing the publish call.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Iterator

import nats
import pytest
from helm import CHART, documents, render

from kairyu_core.bus import Bus, StreamSpec
from kairyu_core.events import PlanCreated, Subjects, WorkspaceObserved, WorkspaceRef
from kairyu_core.localenv.nats import nats_server_binary
from kairyu_core.localenv.processes import free_port

pytestmark = pytest.mark.integration
SERVICES = ("watcher", "planner", "provisioner", "deployer", "tuner")


def password(service: str) -> str:
    return f"pw-{service}-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    (config_map,) = [
        d
        for d in documents(render(CHART / "ci/production-values.yaml"))
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("nats-authorization")
    ]
    root = tmp_path_factory.mktemp("nats")
    (root / "authorization.conf").write_text(config_map["data"]["authorization.conf"])
    port = free_port()
    (root / "server.conf").write_text(
        f'port: {port}\nhost: 127.0.0.1\njetstream {{ store_dir: "{root / "js"}" }}\n'
        "include ./authorization.conf\n"
    )
    env = {**os.environ} | {f"KAIRYU_{s.upper()}_NATS_PASSWORD": password(s) for s in SERVICES}
    log = root / "nats.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(nats_server_binary()), "-c", str(root / "server.conf")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if process.poll() is not None:
                pytest.fail(
                    process.stderr.read().decode() if process.stderr else "nats-server died"
                )
            time.sleep(0.1)
    yield port
    process.terminate()
    process.wait(timeout=10)


def url(service: str, port: int) -> str:
    return f"nats://kairyu-{service}:{password(service)}@127.0.0.1:{port}"


REF = WorkspaceRef(namespace="ml", name="ws", uid="u-1", generation=1, resource_version="1")


async def test_a_service_publishes_its_own_events_through_jetstream(server: int) -> None:
    stream = StreamSpec(name="KAIRYU", subjects=Subjects(prefix="kairyu"))
    bus = await Bus.connect(url("watcher", server), name="kairyu-watcher", stream=stream)
    try:
        await bus.ensure_stream()
        published = await bus.publish(WorkspaceObserved(workspace=REF))
        assert published.sequence >= 1
    finally:
        await bus.close()


async def violations(service: str, port: int, subject: str) -> list[str]:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    client = await nats.connect(url(service, port), error_cb=on_error, allow_reconnect=False)
    try:
        await client.publish(subject, b"{}")
        await client.flush()
        await asyncio.sleep(0.3)  # the server's -ERR arrives after the flush's PONG
    finally:
        await client.close()
    return errors


@pytest.mark.parametrize("service", ["deployer", "tuner", "watcher", "provisioner"])
async def test_no_other_service_can_forge_a_plan(server: int, service: str) -> None:
    subject = Subjects(prefix="kairyu").of_event(PlanCreated, "ml", "ws")
    errors = await violations(service, server, subject)
    assert any("permissions violation" in e.lower() for e in errors), errors


async def test_the_planner_may_publish_plans(server: int) -> None:
    subject = Subjects(prefix="kairyu").of_event(PlanCreated, "ml", "ws")
    assert await violations("planner", server, subject) == []
