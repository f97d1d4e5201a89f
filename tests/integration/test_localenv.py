"""The launcher leaves no process behind: on Ctrl-C / SIGTERM, and even when it is SIGKILLed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_launcher_leaves_no_process_behind(tmp_path: Path, sig: signal.Signals) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "kairyu_core.localenv", "--state-dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as launcher:
        try:
            for line in launcher.stdout:  # type: ignore[union-attr]
                if line.startswith("{"):
                    ready = json.loads(line)
                    break
            assert ready["kubeconfig"] == str((tmp_path / "kubeconfig").resolve())
            started = children_of(launcher.pid)
            names = {Path(f"/proc/{p}/exe").resolve().name for p in started}
            assert {
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kwok",
                "nats-server",
            } <= names
            os.kill(launcher.pid, sig)
            launcher.wait(60)
        finally:
            launcher.kill()
    deadline = time.monotonic() + 30
    while alive(started):
        assert time.monotonic() < deadline, f"left behind: {alive(started)}"
        time.sleep(0.2)
