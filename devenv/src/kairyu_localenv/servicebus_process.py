"""The local Service Bus endpoint as a process, with exactly kairyu's entities and a fresh key.

`make dev ARGS="--bus servicebus"` runs every service on it instead of NATS (docs/bus.md). A
process of its own, as the services are, so that its AMQP loop shares no interpreter with the
launcher; with a state directory, so a `restart()` keeps the messages as Service Bus would.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from kairyu_core.bus.servicebus_topology import servicebus_topology
from kairyu_core.bus.topology import StreamSpec
from kairyu_localenv.processes import Component, ManagedProcess, free_port
from kairyu_localenv.servicebus_topology_entities import entities_json

KEY_NAME = "kairyu"


class ServiceBusProcess(Component):
    """`python -m kairyu_localenv.servicebus_endpoint` on a free port, its state under `workdir`."""

    def __init__(self, *, stream: str = "KAIRYU", workdir: Path | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kairyu-servicebus-"))
        self.port = free_port()
        self._key = secrets.token_urlsafe(24)
        entities = self.workdir / "entities.json"
        entities.write_text(json.dumps(entities_json(servicebus_topology(StreamSpec(name=stream)))))
        # The key travels in the environment, not the command line another user's `ps` shows.
        self._proc = ManagedProcess(
            "servicebus",
            [
                sys.executable,
                "-m",
                "kairyu_localenv.servicebus_endpoint",
                f"--port={self.port}",
                f"--entities={entities}",
                f"--key-from-env={KEY_NAME}=KAIRYU_LOCAL_SERVICEBUS_KEY",
                f"--state-dir={self.workdir / 'state'}",
            ],
            log_dir=self.workdir,
            env={"KAIRYU_LOCAL_SERVICEBUS_KEY": self._key},
        )

    @property
    def process(self) -> ManagedProcess:
        return self._proc

    @property
    def address(self) -> str:
        return f"sb://127.0.0.1:{self.port}"

    @property
    def connection_string(self) -> str:
        """A connection string for the services: the development-emulator form (no TLS)."""
        return (
            f"Endpoint={self.address};SharedAccessKeyName={KEY_NAME};"
            f"SharedAccessKey={self._key};UseDevelopmentEmulator=true"
        )

    def start(self, timeout: float = 30.0) -> None:
        self._proc.start()
        self._proc.wait_until(self.accepts_connections, timeout=timeout, what="its AMQP port")

    def stop(self) -> None:
        self._proc.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self) -> None:
        """Stop (SIGTERM: the endpoint saves its messages) and start again on the same port."""
        self._proc.stop()
        self.start()

    def accepts_connections(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0
