"""Zipkin's server with its browser UI, on 127.0.0.1: where `make dev`'s rollout traces open.

Jaeger v2 (kairyu_localenv.jaeger) keeps serving the query API that `kairyu trace` and `kairyu
why` read, but its UI is not in the Go module; Zipkin's exec jar from Maven Central carries its
UI and runs on the machine's Java, so the services export to both (kairyu_core.tracing). The jar
comes from tools/zipkin/fetch.sh, which checks its sha256 and caches it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from kairyu_localenv.binaries import run_build
from kairyu_localenv.processes import Component, ManagedProcess, StartupError, free_port, http_ok

FETCH_SCRIPT = Path("tools/zipkin/fetch.sh")
DIR_ENV = "KAIRYU_ZIPKIN_DIR"
JAVA_MAJOR = 17  # Zipkin 3's minimum

# Zipkin's spans live in its memory: enough for hundreds of rollouts, bounded in a long session.
_MAX_SPANS = 200_000
_PORT_ATTEMPTS = 3


def locate() -> Path:
    """$KAIRYU_ZIPKIN_DIR/zipkin.jar if set, else the fetch script's (it downloads it once)."""
    if directory := os.environ.get(DIR_ENV):
        return Path(directory) / "zipkin.jar"
    return run_build(FETCH_SCRIPT) / "zipkin.jar"


def java_version(banner: str) -> int | None:
    """The major version in `java -version`'s banner ("17.0.15", or "1.8.0_392" for Java 8)."""
    found = re.search(r'version "(\d+)(?:\.(\d+))?', banner)
    if found is None:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def missing_java() -> str | None:
    """Why Zipkin cannot run here (no Java, or one older than 17); None when it can."""
    java = shutil.which("java")
    if java is None:
        return f"no `java` on PATH (Zipkin needs Java {JAVA_MAJOR} or later)"
    banner = subprocess.run(
        [java, "-version"], capture_output=True, text=True, timeout=30, check=False
    ).stderr
    major = java_version(banner)
    if major is None or major < JAVA_MAJOR:
        return f"{java} is Java {major or '?'}; Zipkin needs {JAVA_MAJOR} or later"
    return None


class LocalZipkin(Component):
    """Zipkin with in-memory storage; `launch` returns at once so the JVM starts beside the rest."""

    def __init__(self, *, workdir: Path | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kairyu-zipkin-"))
        self.port = free_port()
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/zipkin/"

    @property
    def span_endpoint(self) -> str:
        """Where the services' Zipkin exporter posts spans (OTEL_EXPORTER_ZIPKIN_ENDPOINT)."""
        return f"http://127.0.0.1:{self.port}/api/v2/spans"

    def trace_url(self, trace_id: str) -> str:
        """The page of one trace in Zipkin's UI."""
        return f"http://127.0.0.1:{self.port}/zipkin/traces/{trace_id}"

    def launch(self) -> None:
        jar = locate()
        self._proc = ManagedProcess(
            "zipkin",
            [
                "java",
                "-Xmx256m",  # the heap holds the spans (_MAX_SPANS) and the UI's queries
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",  # starts in about half the time on two cores
                "-jar",
                str(jar),
                # Only this machine: the UI has no authentication.
                "--armeria.ports[0].ip=127.0.0.1",
                f"--armeria.ports[0].port={self.port}",
                "--armeria.ports[0].protocols=http",
                "--logging.level.root=warn",
            ],
            log_dir=self.workdir,
            env={"STORAGE_TYPE": "mem", "MEM_MAX_SPANS": str(_MAX_SPANS)},
        )
        self._proc.start()

    def wait_ready(self, timeout: float = 90.0) -> None:
        if self._proc is None:
            raise StartupError("zipkin was not launched")
        self._proc.wait_until(
            http_ok(f"http://127.0.0.1:{self.port}/health", expect=b'"UP"'),
            timeout=timeout,
            what="zipkin's health",
        )

    def finish_start(self, timeout: float = 90.0) -> None:
        """Wait for the JVM `launch` started; relaunch on a fresh port if its port was taken."""
        try:
            self.wait_ready(timeout)
        except StartupError as exc:
            self.stop_process()
            if not exc.port_clash:
                raise
            self.port = free_port()
            self.start(timeout)

    def start(self, timeout: float = 90.0) -> None:
        """Launch and wait for health; on a port taken meanwhile, try fresh ones."""
        for attempt in range(_PORT_ATTEMPTS):
            try:
                self.launch()
                self.wait_ready(timeout)
            except StartupError as exc:
                self.stop_process()
                if not exc.port_clash or attempt == _PORT_ATTEMPTS - 1:
                    raise
                self.port = free_port()
            else:
                return

    def stop_process(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def stop(self) -> None:
        self.stop_process()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
