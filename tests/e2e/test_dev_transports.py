"""`make dev` on each bus: the three seed manifests roll out, one trace each across processes.

The launcher is `make dev` itself (python -m kairyu_localenv), with `--bus nats` (the default)
and `--bus servicebus`: every service runs as its own process on that bus, and on Service Bus
there is no NATS anywhere. The seed rolls out as `make dev` shows it; the other two manifests are
applied as a user would, with kubectl in another terminal (the env file `make dev` writes). Each
Workspace must reach its final state, and Jaeger must hold each rollout in exactly one trace with
spans from every service process that handled it. This is the bus contract's trace propagation
across processes (the rest of the contract is tests/integration/test_bus_contract.py): nothing
of a trace travels on either bus, its ids come from the Workspace's uid and generation.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kairyu_cli.traceview import trace_id_of
from kairyu_localenv.binaries import repo_root
from kairyu_testing.dev_launcher import dev_launcher
from kairyu_testing.workspaces import workspace_of_span

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

EXAMPLES = repo_root() / "examples"
# Each manifest, its Workspace's final state, and the services whose spans its trace must hold.
ROLLOUTS = {
    "workspace-phi-3-mini.yaml": ("Ready", {"planner", "provisioner", "deployer"}),
    "workspace-phi-3-adapter.yaml": ("Ready", {"planner", "provisioner", "deployer"}),
    "workspace-tuning-phi-3.yaml": ("Succeeded", {"planner", "provisioner", "tuner"}),
}
SERVICES = ("kairyu-planner", "kairyu-provisioner", "kairyu-deployer", "kairyu-tuner")


@pytest.fixture(params=["nats", "servicebus"])
def dev_environment(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, dict[str, Any], dict[str, str]]]:
    """`make dev ARGS="--bus <bus>"` once ready: the bus, its JSON line and its env file."""
    log = tmp_path / "launcher.log"
    bus = request.param
    with dev_launcher(tmp_path, ["--bus", bus, "--no-trace-ui"]) as launcher:
        assert launcher.stdout is not None
        ready = next((json.loads(line) for line in launcher.stdout if line.startswith("{")), None)
        assert ready is not None, f"make dev never became ready:\n{log.read_text()[-4000:]}"
        env: dict[str, str] = {}
        for line in (tmp_path / "env").read_text().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0] if value else ""
        yield bus, ready, env
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(60)


def kubectl(env: dict[str, str], *args: str) -> str:
    path = env["PATH"].replace("$PATH", os.environ["PATH"])
    done = subprocess.run(
        ["kubectl", *args],
        env={**os.environ, "KUBECONFIG": env["KUBECONFIG"], "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def until_final(env: dict[str, str], name: str, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = json.loads(kubectl(env, "get", "workspace", name, "-o", "json"))
        status = obj.get("status") or {}
        ready = any(
            c["type"] == "WorkspaceReady" and c["status"] == "True"
            for c in status.get("conditions") or []
        )
        if ready and status.get("state"):
            return dict(obj)
        time.sleep(1)
    raise AssertionError(f"{name} did not become ready in {timeout:.0f}s: {status}")


def jaeger_spans(query_url: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every span of the last hour from kairyu's services: (trace id, service, tags)."""
    start = int((time.time() - 3600) * 1e6)
    found = []
    for service in SERVICES:
        query = urllib.parse.urlencode({"service": service, "limit": 1000, "start": start})
        with urllib.request.urlopen(f"{query_url}/api/traces?{query}", timeout=10) as answer:
            traces = json.load(answer).get("data") or []
        for trace in traces:
            names = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
            for span in trace["spans"]:
                tags = {t["key"]: t.get("value") for t in span.get("tags") or []}
                found.append((span["traceID"], names[span["processID"]], tags))
    return found


def test_the_seed_manifests_roll_out_in_one_trace_each_on_either_bus(
    dev_environment: tuple[str, dict[str, Any], dict[str, str]],
) -> None:
    bus, ready, env = dev_environment
    if bus == "servicebus":
        assert ready["bus"].startswith("sb://"), ready
        assert env["KAIRYU_BUS"] == "servicebus"
        assert not any(name.startswith("KAIRYU_NATS") for name in env), "NATS is configured"
    else:
        assert ready["bus"].startswith("nats://"), ready
        assert "KAIRYU_BUS" not in env  # the services' default
        assert env["KAIRYU_NATS__URL"] == ready["bus"]
    # make dev rolled out the first one; the other two are applied from another terminal.
    for manifest in ("workspace-phi-3-adapter.yaml", "workspace-tuning-phi-3.yaml"):
        kubectl(env, "apply", "-f", str(EXAMPLES / manifest))
    expected: dict[str, str] = {}  # namespace/name → its rollout's trace id
    wanted: dict[str, set[str]] = {}  # namespace/name → the services its trace must show
    for manifest, (state, services_of_it) in ROLLOUTS.items():
        name = yaml.safe_load((EXAMPLES / manifest).read_text())["metadata"]["name"]
        done = until_final(env, name)
        assert done["status"]["state"] == state, (name, done["status"])
        trace_id = trace_id_of(done["metadata"])
        assert trace_id is not None
        expected[f"default/{name}"] = trace_id
        wanted[f"default/{name}"] = services_of_it

    # Each service process exports its spans in its own batches: wait for all of them.
    deadline = time.monotonic() + 60
    while True:
        traces: dict[str, set[str]] = defaultdict(set)
        services: dict[str, set[str]] = defaultdict(set)
        for trace_id, service, tags in jaeger_spans(env["KAIRYU_JAEGER_URL"]):
            services[trace_id].add(service.removeprefix("kairyu-"))
            if (key := workspace_of_span(tags)) in expected:
                traces[key].add(trace_id)
        missing = {key: wanted[key] - services[trace_id] for key, trace_id in expected.items()}
        if not any(missing.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    for key, trace_id in expected.items():
        assert traces[key] == {trace_id}, f"{key}: its spans are in {len(traces[key])} traces"
        assert not missing[key], f"{key}: no span from {sorted(missing[key])} in its trace"
