"""The local Service Bus endpoint as a child process, for `make dev` and a broker to restart.

`make dev ARGS="--bus servicebus"` runs every service on it instead of NATS (docs/bus.md), with
exactly kairyu's entities and a key made at start. The bus contract suite restarts it under its
clients (tests/integration/test_bus_contract.py). A process of its own, so that its AMQP loop
shares no interpreter with the launcher or the test, and so that a restart drops the clients'
connections as a Service Bus outage does; its state directory keeps the messages across one.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kairyu_core.bus.servicebus_topology import servicebus_topology
from kairyu_core.bus.topology import StreamSpec
from kairyu_localenv.processes import Component, ManagedProcess, free_port
from kairyu_localenv.servicebus_endpoint import connection_string_of
from kairyu_localenv.servicebus_topology_entities import entities_json

KEY_NAME = "kairyu"


class ServiceBusProcess(Component):
    """`python -m kairyu_localenv.servicebus_endpoint` on a free port, its state under `workdir`.

    `entities` as the `--entities` file holds them (`specs_from_json`); by default kairyu's, on
    the default stream name. `keys` by name; by default one, `kairyu`, made now. The keys reach
    the process through its environment, not its command line, which `ps` shows anyone.
    """

    def __init__(
        self,
        entities: Mapping[str, Any] | None = None,
        *,
        keys: Mapping[str, str] | None = None,
        workdir: Path | None = None,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kairyu-servicebus-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.keys = dict(keys or {KEY_NAME: secrets.token_urlsafe(24)})
        entities_file = self.workdir / "entities.json"
        entities = entities or entities_json(servicebus_topology(StreamSpec()))
        entities_file.write_text(json.dumps(entities))
        variables = {
            f"KAIRYU_LOCAL_SERVICEBUS_KEY_{i}": key for i, key in enumerate(self.keys.values())
        }
        self.process = ManagedProcess(
            "servicebus",
            [
                sys.executable,
                "-m",
                "kairyu_localenv.servicebus_endpoint",
                f"--port={self.port}",
                f"--host={self.host}",
                f"--entities={entities_file}",
                *(
                    f"--key-from-env={name}={variable}"
                    for name, variable in zip(self.keys, variables, strict=True)
                ),
                f"--state-dir={self.workdir / 'state'}",
            ],
            log_dir=self.workdir,
            env=variables,
        )

    @property
    def address(self) -> str:
        return f"sb://{self.host}:{self.port}"

    def connection_string(self, key_name: str = KEY_NAME) -> str:
        """A connection string with the key `key_name`: the development-emulator form (no TLS)."""
        return connection_string_of(self.host, self.port, key_name, self.keys[key_name])

    def start(self, timeout: float = 30.0) -> None:
        self.process.start()
        self.process.wait_until(self.accepts_connections, timeout=timeout, what="its AMQP port")

    def stop(self) -> None:
        self.process.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self) -> None:
        """SIGTERM (it writes its messages to its state directory), then start on the same port."""
        self.process.stop()
        self.start()

    def accepts_connections(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex((self.host, self.port)) == 0
