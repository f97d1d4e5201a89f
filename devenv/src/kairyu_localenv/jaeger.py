"""Jaeger v2 on free ports with in-memory storage: where `make dev`'s services send their spans.

The binary comes from tools/jaeger/build.sh (Go module proxy, cached like the control plane). It
receives OTLP over HTTP and serves the query API that `kairyu trace` reads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import yaml

from kairyu_localenv.binaries import run_build
from kairyu_localenv.processes import ManagedProcess, StartupError, free_port, http_ok

BUILD_SCRIPT = Path("tools/jaeger/build.sh")
DIR_ENV = "KAIRYU_JAEGER_DIR"


def locate() -> Path:
    """$KAIRYU_JAEGER_DIR if set, else what the build script reports (it builds when cold)."""
    if directory := os.environ.get(DIR_ENV):
        return Path(directory) / "jaeger"
    return run_build(BUILD_SCRIPT) / "jaeger"


# Tries with fresh ports when one picked as free was taken before Jaeger bound it (as LocalNats).
_PORT_ATTEMPTS = 3


def config(
    *, otlp_port: int, query_port: int, grpc_port: int, health_port: int
) -> dict[str, object]:
    """Jaeger's collector-style config: OTLP/HTTP in, memory store, query API and health out."""
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {"logs": {"level": "warn"}, "metrics": {"level": "none"}},
        },
        "extensions": {
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"127.0.0.1:{health_port}"}},
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                "http": {"endpoint": f"127.0.0.1:{query_port}"},
                "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
            },
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 100000}}}},
        },
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{otlp_port}"}}}},
        "processors": {"batch": {"timeout": "1s"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


class LocalJaeger:
    def __init__(self, *, workdir: Path | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kairyu-jaeger-"))
        self.otlp_port, self.query_port = free_port(), free_port()
        self.grpc_port, self.health_port = free_port(), free_port()
        self._proc: ManagedProcess | None = None

    @property
    def otlp_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.otlp_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait for health; on a port clash (a port taken meanwhile) pick fresh ones."""
        for attempt in range(_PORT_ATTEMPTS):
            try:
                self._start(timeout)
            except StartupError as exc:
                self.stop_process()
                if not exc.port_clash or attempt == _PORT_ATTEMPTS - 1:
                    raise
            else:
                return
            self.otlp_port, self.query_port = free_port(), free_port()
            self.grpc_port, self.health_port = free_port(), free_port()

    def _start(self, timeout: float) -> None:
        path = self.workdir / "jaeger.yaml"
        path.write_text(
            yaml.safe_dump(
                config(
                    otlp_port=self.otlp_port,
                    query_port=self.query_port,
                    grpc_port=self.grpc_port,
                    health_port=self.health_port,
                )
            )
        )
        self._proc = ManagedProcess(
            "jaeger", [str(locate()), f"--config={path}"], log_dir=self.workdir
        )
        self._proc.start()
        self._proc.wait_until(
            http_ok(f"http://127.0.0.1:{self.health_port}/status"), timeout=timeout, what="jaeger"
        )

    def stop_process(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def stop(self) -> None:
        self.stop_process()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
