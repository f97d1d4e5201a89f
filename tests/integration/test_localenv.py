"""`make dev`: the seed gets its nodes, and nothing is left behind on Ctrl-C, SIGTERM or SIGKILL."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kairyu_localenv import Binaries, LocalCluster, LocalNats
from kairyu_testing.dev_launcher import dev_launcher

ROOT = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pids: set[int]) -> set[int]:
    still = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            still.add(pid)
    return still


@pytest.mark.integration
@pytest.mark.parametrize(
    "signals",
    [(signal.SIGTERM,), (signal.SIGKILL,), (signal.SIGINT, signal.SIGINT)],
    # Ctrl-C on `make dev` reaches the launcher twice: from the terminal, and forwarded by uv.
    ids=["sigterm", "sigkill", "ctrl-c-through-uv"],
)
def test_launcher_leaves_no_process_behind(
    tmp_path: Path, signals: tuple[signal.Signals, ...]
) -> None:
    log = tmp_path / "launcher.log"
    with dev_launcher(tmp_path) as launcher:
        assert launcher.stdout is not None
        shown: list[str] = []
        ready = None
        for line in launcher.stdout:
            if line.startswith("{"):
                ready = json.loads(line)
                break
            shown.append(line)
        assert ready is not None, f"the launcher never became ready:\n{log.read_text()}"
        # `kubectl get workspace`: nodes from Karpenter, the workload Running on them.
        header, row = next(
            (line.split(), shown[i + 1].split())
            for i, line in enumerate(shown)
            if line.startswith("NAMESPACE")
        )
        columns = dict(zip(header, row, strict=False))
        assert (
            columns["NAME"],
            columns["RESOURCEREADY"],
            columns["INFERENCEREADY"],
            columns["WORKSPACEREADY"],
        ) == ("workspace-phi-3-mini", "True", "True", "True")
        assert ready["kubeconfig"] == str((tmp_path / "kubeconfig").resolve())
        # The live table ended Ready, and the rollout's waterfall came from Jaeger with every
        # service that took part.
        assert any("WorkspaceReady=True" in line for line in shown)
        waterfall = "".join(
            shown[next(i for i, text in enumerate(shown) if text.startswith("rollout trace")) :]
        )
        rows = [line.split() for line in waterfall.splitlines()]
        for phase, service in (
            ("plan", "planner"),
            ("provision", "provisioner"),
            ("deploy", "deployer"),
            ("ready", "deployer"),  # its status write finished the rollout
        ):
            assert any(row[:2] == [phase, service] for row in rows), waterfall
        # The root, whose ids the Workspace's uid and generation give: "rollout <ns>/<name>".
        assert any(row[:1] == ["rollout"] and row[2:3] == ["planner"] for row in rows), waterfall
        # `kairyu trace` reads the same trace, from another terminal's environment.
        env_file = dict(
            line.removeprefix("export ").split("=", 1)
            for line in (tmp_path / "env").read_text().splitlines()
        )
        traced = subprocess.run(
            [
                sys.executable,
                "-m",
                "kairyu_cli.commands",
                "trace",
                "default/workspace-phi-3-mini",
            ],
            env={
                **os.environ,
                "KUBECONFIG": env_file["KUBECONFIG"],
                "KAIRYU_JAEGER_URL": env_file["KAIRYU_JAEGER_URL"],
                "KAIRYU_ZIPKIN_URL": env_file["KAIRYU_ZIPKIN_URL"],
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert traced.returncode == 0, traced.stderr
        assert "provisioner" in traced.stdout
        # The page `make dev` printed for the browser (tests/e2e/test_trace_ui.py opens it).
        assert f"in a browser: {ready['trace_ui']}\n" in traced.stdout
        started = children_of(launcher.pid)
        names = {Path(f"/proc/{p}/exe").resolve().name for p in started}
        assert {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
            "nats-server",
            "karpenter-kwok",
            "jaeger",
            "java",  # Zipkin's server, the trace UI
        } <= names
        for sig in signals:
            os.kill(launcher.pid, sig)
            time.sleep(0.3)
        code = launcher.wait(60)
        if signal.SIGKILL not in signals:  # a clean stop, without a traceback
            assert code == 0, log.read_text()[-3000:]
    deadline = time.monotonic() + 30
    while alive(started):
        assert time.monotonic() < deadline, f"left behind: {alive(started)}"
        time.sleep(0.2)


def occupy(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@pytest.mark.integration
def test_a_port_taken_after_it_was_picked_is_replaced() -> None:
    nats = LocalNats()
    cluster = LocalCluster(Binaries.locate())
    taken = [occupy(nats.port), occupy(cluster.ports["scheduler"])]
    try:
        nats.start()
        cluster.start()
        assert nats.port != taken[0].getsockname()[1]
        assert cluster.ports["scheduler"] != taken[1].getsockname()[1]
        assert nats.accepts_connections()
        assert "ok" in cluster.kubectl("get", "--raw", "/readyz").stdout
    finally:
        cluster.stop()
        nats.stop()
        for sock in taken:
            sock.close()
