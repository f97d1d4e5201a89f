"""`make bench`: N Workspaces at once through the whole system, and what it costs.

For each N: a fresh local control plane, NATS, real Karpenter (kwok provider, no registration
delay) and the five services as their own processes, as `make dev` runs them. N inference
Workspaces (phi-3-mini on Standard_NC6s_v3) are applied at once; the script reports apply →
`WorkspaceReady=True` latency (p50 / p95 / max), kube-apiserver requests and NATS messages per
Workspace, and each service's peak RSS. Then, on the same cluster, the bare minimum: a script that
performs only the API writes one rollout needs (status, a node, config, service, deployment,
conditions), so kairyu's cost reads as a ratio. Prints a Markdown table; `--write` also puts it
into docs/benchmarks.md. Not a test: it asserts nothing, it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import statistics
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kairyu_core import metrics
from kairyu_core.kube import KubeClient, apply_status, resources
from kairyu_core.localenv import Binaries, LocalCluster, LocalNats
from kairyu_core.localenv.__main__ import SERVICES, start_capacity, start_services
from kairyu_core.localenv.binaries import repo_root
from kairyu_core.localenv.karpenter import LocalKarpenter
from kairyu_core.localenv.processes import ManagedProcess, free_port, http_ok

log = logging.getLogger("kairyu.bench")
NAMESPACE = "bench"
BASELINE_NAMESPACE = "baseline"


@dataclass
class Result:
    n: int
    ready: int
    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    api_requests: float = 0.0
    all_requests: float = 0.0
    nats_messages: float = 0.0
    events: float = 0.0
    rss_mib: dict[str, float] = field(default_factory=dict)
    baseline_wall_s: float = 0.0
    baseline_requests: float = 0.0
    # (service, "METHOD resource") → requests per Workspace: where kairyu's API cost goes.
    breakdown: dict[tuple[str, str], float] = field(default_factory=dict)


def workspace(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": f"ws-{index:04d}", "namespace": NAMESPACE},
        "resource": {
            "instanceType": "Standard_NC6s_v3",
            "labelSelector": {"matchLabels": {"bench": f"ws-{index:04d}"}},
        },
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


def apiserver_requests(cluster: LocalCluster) -> float:
    """All requests the apiserver has served (every client: kairyu, Karpenter, kwok, kcm)."""
    metrics = cluster.kubectl("get", "--raw", "/metrics").stdout
    return sum(
        float(m.group(1))
        for m in re.finditer(r"^apiserver_request_total\{[^}]*\} ([0-9.e+]+)$", metrics, re.M)
    )


def nats_counts(nats: LocalNats) -> tuple[float, float]:
    """Messages into the server (all, JetStream API included) and events stored in the stream."""
    with urllib.request.urlopen(f"http://127.0.0.1:{nats.monitor_port}/varz", timeout=5) as r:
        varz = json.load(r)
    with urllib.request.urlopen(f"http://127.0.0.1:{nats.monitor_port}/jsz", timeout=5) as r:
        jsz = json.load(r)
    return float(varz["in_msgs"]), float(jsz.get("messages", 0))


_KUBE_REQUESTS = re.compile(
    r'^kairyu_kube_requests_total\{[^}]*method="([A-Z]+)"[^}]*resource="([^"]*)"[^}]*\} '
    r"([0-9.e+]+)$",
    re.M,
)


def _service_requests(ports: dict[str, int]) -> dict[tuple[str, str], float]:
    """Kubernetes API requests kairyu's services made (their kairyu_kube_requests_total), by
    service and `METHOD resource`."""
    counts: dict[tuple[str, str], float] = {}
    for service, port in ports.items():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        for m in _KUBE_REQUESTS.finditer(text):
            key = (service, f"{m.group(1)} {m.group(2)}")
            counts[key] = counts.get(key, 0.0) + float(m.group(3))
    return counts


def peak_rss_mib(process: ManagedProcess) -> float:
    pid = process.pid
    if pid is None:
        return 0.0
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) / 1024 if match else 0.0


async def _create_all(cluster: LocalCluster, docs: list[dict[str, Any]]) -> None:
    """Create the Workspaces concurrently, as many clients applying at once would (kubectl's own
    client-side rate limit would spread 500 creations over minutes)."""
    kube = await KubeClient.connect(cluster.kubeconfig)
    gate = asyncio.Semaphore(32)

    async def create(doc: dict[str, Any]) -> None:
        async with gate:
            await kube.request(
                "POST", resources.WORKSPACES.path(namespace=doc["metadata"]["namespace"]), body=doc
            )

    try:
        await asyncio.gather(*(create(doc) for doc in docs))
    finally:
        await kube.close()


def ready_times(cluster: LocalCluster, namespace: str) -> dict[str, bool]:
    listed = json.loads(
        cluster.kubectl("get", "workspaces.kaito.sh", "-n", namespace, "-o", "json").stdout
    )
    return {
        item["metadata"]["name"]: any(
            c["type"] == "WorkspaceReady" and c["status"] == "True"
            for c in (item.get("status") or {}).get("conditions") or []
        )
        for item in listed["items"]
    }


def run_kairyu(n: int, timeout_s: float) -> tuple[Result, LocalCluster, list[Any]]:
    cluster = LocalCluster(Binaries.locate())
    nats = LocalNats()
    parts: list[Any] = [nats]
    cluster.start()
    nats.start()
    cluster.apply(repo_root() / "config/crd/kaito.sh_workspaces.yaml")
    cluster.wait_for_crds("workspaces.kaito.sh")
    capacity: list[ManagedProcess | LocalKarpenter] = []
    provisioner_env = start_capacity("karpenter", cluster, capacity)
    parts.extend(capacity)
    ports = {svc: free_port() for svc in SERVICES}
    extra = {svc: {"KAIRYU_HEALTH_PORT": str(port)} for svc, port in ports.items()}
    extra["provisioner"] |= provisioner_env
    services = start_services(cluster, nats, extra)
    parts.extend(services)
    cluster.create_namespace(NAMESPACE)
    for service in services:  # up: its health server answers once its connections are made
        service.wait_until(
            http_ok(f"http://127.0.0.1:{ports[service.name.removeprefix('kairyu_')]}/readyz"),
            timeout=60,
            what=f"{service.name} ready",
        )
    requests_before = apiserver_requests(cluster)
    ours_before = _service_requests(ports)
    msgs_before, events_before = nats_counts(nats)
    started = time.monotonic()
    asyncio.run(_create_all(cluster, [workspace(i) for i in range(n)]))
    done: dict[str, float] = {}
    while len(done) < n and time.monotonic() - started < timeout_s:
        now = time.monotonic() - started
        for name, ready in ready_times(cluster, NAMESPACE).items():
            if ready and name not in done:
                done[name] = now
        time.sleep(0.5)
    result = Result(n=n, ready=len(done), latencies=sorted(done.values()))
    result.wall_s = time.monotonic() - started
    result.all_requests = (apiserver_requests(cluster) - requests_before) / n
    ours = {k: v - ours_before.get(k, 0.0) for k, v in _service_requests(ports).items()}
    result.api_requests = sum(ours.values()) / n
    result.breakdown = {key: count / n for key, count in ours.items() if count}
    msgs_after, events_after = nats_counts(nats)
    result.nats_messages = (msgs_after - msgs_before) / n
    result.events = (events_after - events_before) / n
    result.rss_mib = {p.name.removeprefix("kairyu_"): peak_rss_mib(p) for p in services}
    return result, cluster, [*reversed(parts)]


def run_baseline(cluster: LocalCluster, n: int, result: Result) -> None:
    """Only the writes a rollout needs, by one client in order: no watches, events or planning.

    Per Workspace: the plan (status), a NodeClaim, ResourceReady, the ConfigMap, Service and
    Deployment, InferenceReady, then WorkspaceReady with the state: 8 requests. The Workspace's
    own creation is the user's and is counted on neither side.
    """
    cluster.create_namespace(BASELINE_NAMESPACE)
    docs = [workspace(i) for i in range(n)]
    for i, doc in enumerate(docs):
        doc["metadata"] = {"name": f"bl-{i:04d}", "namespace": BASELINE_NAMESPACE}
    asyncio.run(_create_all(cluster, docs))
    before = _kube_requests_here()
    started = time.monotonic()
    asyncio.run(_baseline_writes(cluster, n))
    result.baseline_wall_s = time.monotonic() - started
    result.baseline_requests = (_kube_requests_here() - before) / n


def _kube_requests_here() -> float:
    return sum(
        sample.value
        for family in metrics.KUBE_REQUESTS.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


async def _baseline_writes(cluster: LocalCluster, n: int) -> None:
    kube = await KubeClient.connect(cluster.kubeconfig)
    try:
        for i in range(n):
            name = f"bl-{i:04d}"

            async def status(kind: str, state: str | None = None, name: str = name) -> None:
                fields: dict[str, Any] = {"conditions": [_condition(kind)]}
                if state:
                    fields["state"] = state
                await apply_status(
                    kube, namespace=BASELINE_NAMESPACE, name=name, field_manager="bl", status=fields
                )

            await status("Planned")
            await kube.apply(resources.NODECLAIMS, _nodeclaim(name), field_manager="bl")
            await status("ResourceReady")
            for resource, obj in _workload(name):
                await kube.apply(resource, obj, field_manager="bl")
            await status("InferenceReady")
            await status("WorkspaceReady", "Ready")
    finally:
        await kube.close()


def _nodeclaim(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {"name": f"{name}-claim", "labels": {"karpenter.sh/nodepool": "baseline"}},
        "spec": {
            "nodeClassRef": {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "none"},
            "requirements": [
                {
                    "key": "node.kubernetes.io/instance-type",
                    "operator": "In",
                    "values": ["Standard_NC6s_v3"],
                }
            ],
        },
    }


def _workload(name: str) -> list[tuple[resources.Resource, dict[str, Any]]]:
    meta = {"name": name, "namespace": BASELINE_NAMESPACE}
    labels = {"app": name}
    pod = {"containers": [{"name": "model", "image": "vllm/vllm-openai"}]}
    return [
        (resources.CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}),
        (
            resources.SERVICES,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta,
                "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 5000}]},
            },
        ),
        (
            resources.DEPLOYMENTS,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta,
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": pod},
                },
            },
        ),
    ]


def _condition(kind: str) -> dict[str, str]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": kind,
        "status": "True",
        "reason": "Done",
        "message": "",
        "lastTransitionTime": now,
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
        if len(values) > 1
        else values[0]
    )


def table(results: list[Result]) -> str:
    rows = [
        "| N | ready | p50 s | p95 s | max s | kairyu API req / ws | minimum / ws | ratio "
        "| all apiserver req / ws | NATS msgs / ws | events / ws | wall s | minimum wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = r.api_requests / r.baseline_requests if r.baseline_requests else float("nan")
        rows.append(
            f"| {r.n} | {r.ready} | {pct(r.latencies, 50):.1f} | {pct(r.latencies, 95):.1f} "
            f"| {max(r.latencies, default=float('nan')):.1f} | {r.api_requests:.1f} "
            f"| {r.baseline_requests:.1f} | {ratio:.1f} | {r.all_requests:.0f} "
            f"| {r.nats_messages:.0f} | {r.events:.1f} | {r.wall_s:.0f} | {r.baseline_wall_s:.1f} |"
        )
    services = sorted({s for r in results for s in r.rss_mib})
    rows += [
        "",
        "Peak RSS of each service process (MiB):",
        "",
        "| N | " + " | ".join(services) + " |",
        "|---" * (len(services) + 1) + "|",
    ]
    for r in results:
        rss = " | ".join(f"{r.rss_mib.get(s, 0):.0f}" for s in services)
        rows.append(f"| {r.n} | {rss} |")
    largest = max(results, key=lambda r: r.n, default=None)
    if largest is not None and largest.breakdown:
        rows += [
            "",
            f"Where kairyu's API requests went at N={largest.n} (per Workspace, 0.5 and more):",
            "",
            "| service | request | per ws |",
            "|---|---|---|",
        ]
        ranked = sorted(largest.breakdown.items(), key=lambda kv: (kv[0][0], -kv[1]))
        rows += [f"| {svc} | {req} | {n:.1f} |" for (svc, req), n in ranked if n >= 0.5]
    return "\n".join(rows)


def machine() -> str:
    cpus = os.cpu_count()
    memory = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    gib = int(memory) // 1024 // 1024
    python = platform.python_version()
    return f"{platform.system()} {platform.machine()}, {cpus} CPUs, {gib} GiB, Python {python}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--timeout-s", type=float, default=900)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    results = []
    for n in args.n:
        log.info("N=%d: starting the system", n)
        result, cluster, parts = run_kairyu(n, args.timeout_s)
        try:
            log.info("N=%d: %d ready in %.0fs; the minimum, alone", n, result.ready, result.wall_s)
            for part in parts:  # kairyu stops: the minimum's writes must be the only ones
                part.stop()
            run_baseline(cluster, n, result)
        finally:
            for part in parts:
                part.stop()
            cluster.stop()
        results.append(result)
        print(table(results), flush=True)  # noqa: T201 - the benchmark's output
    if args.write:
        write(results)


def write(results: list[Result]) -> None:
    path = repo_root() / "docs/benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    marker = "<!-- bench:rollouts -->"
    when = f"{datetime.now(UTC):%Y-%m-%d}"
    block = f"{marker}\nMeasured {when} on {machine()}.\n\n{table(results)}\n{marker}"
    if marker in text:
        head, _, rest = text.partition(marker)
        _, _, tail = rest.partition(marker)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
