"""Child processes that cannot outlive the Python process that started them.

Each child runs in its own process group (so a stop reaches anything it forked) and asks the kernel
to kill it when its parent dies (PR_SET_PDEATHSIG), which covers the one case no `finally` can: the
test runner itself being SIGKILLed. A normal stop sends SIGTERM to the group, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from ssl import SSLContext
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class StartupError(RuntimeError):
    """A component did not become healthy; the message carries the end of its log."""

    @property
    def port_clash(self) -> bool:
        """The port picked for it was taken meanwhile (by a bind or an outgoing connection)."""
        return "address already in use" in str(self).lower()  # Go's wording, and Java's


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Component:
    """A part of the local environment: started, stopped, and a context manager doing both."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ManagedProcess:
    """One long-running child with its output in a log file."""

    def __init__(
        self, name: str, argv: Sequence[str], *, log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        # PR_SET_PDEATHSIG fires when the creating *thread* exits, so a child started from a worker
        # thread (asyncio.to_thread, an executor) would be killed when that thread is retired.
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                f"start {self.name} from the main thread: it dies with the thread that starts it"
            )
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self._env or {})},
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads are started before exec
            )
        log.debug("started %s (pid %s): %s", self.name, self._proc.pid, " ".join(self.argv))

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after `timeout` seconds."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # A child that forked and left its own group behind would survive killpg; none of ours do.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL at once: for tests of what survives a crash."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
            self._proc = None

    def wait_until(self, probe: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll `probe` until it returns True; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise StartupError(
                    f"{self.name} exited while waiting for {what}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError, urllib.error.URLError):
                if probe():
                    return
            time.sleep(0.2)
        raise StartupError(f"{self.name}: {what} not reached in {timeout:.0f}s:\n{self.log_tail()}")


def http_ok(
    url: str, *, context: SSLContext | None = None, expect: bytes | None = None
) -> Callable[[], bool]:
    """A probe that is true when `url` answers 200 (and its body contains `expect`)."""

    def probe() -> bool:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:  # noqa: S310 - local URLs only
            body: bytes = resp.read()
            return resp.status == 200 and (expect is None or expect in body)  # noqa: PLR2004

    return probe
