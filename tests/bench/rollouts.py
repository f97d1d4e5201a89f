"""`make bench`: N Workspaces at once through the whole system, and what it costs.

For each N: a fresh local control plane, NATS and the services as their own processes, as
`make dev` runs them, with GPU nodes from real Karpenter (kwok provider, no registration delay;
`--backend karpenter`, the default) or made up front, one per Workspace (`--backend byo`), so
Karpenter's share of the cost is visible. N inference Workspaces (phi-3-mini on
Standard_NC6s_v3) are applied at once and one watch of Workspaces (the script's only request
while they roll out) records when each first shows `WorkspaceReady=True` for its generation. The
script reports apply → ready latency (p50 / p95 / max), kube-apiserver requests and NATS messages
per Workspace, the CPU seconds per Workspace of every process of the system (utime + stime from
/proc, sampled before the apply and after the last Workspace is ready) and each service's peak
RSS. Then, on the same cluster, the bare minimum: a script that performs only the API writes one
rollout needs (status, a node, config, service, deployment, conditions), so kairyu's cost reads as
a ratio. Prints Markdown tables; `--write` also puts them into docs/benchmarks.md. Not a test: it
asserts nothing, it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import re
import statistics
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from kairyu_core import metrics
from kairyu_core.bus.topology import SERVICES
from kairyu_core.kube import JSON, KubeClient, apply_status, resources, watch
from kairyu_localenv import Binaries, LocalCluster, LocalNats, gpu_node_manifest
from kairyu_localenv.__main__ import EXAMPLE_NODES, start_capacity, start_services
from kairyu_localenv.binaries import repo_root
from kairyu_localenv.karpenter_kwok import LocalKarpenter
from kairyu_localenv.processes import ManagedProcess, free_port, http_ok

log = logging.getLogger("kairyu.bench")
NAMESPACE = "bench"
BASELINE_NAMESPACE = "baseline"
Backend = Literal["karpenter", "byo"]
# Each Workspace selects its nodes by this label (value: the Workspace's name); byo's pre-made
# nodes carry it, Karpenter's NodeClaims get it from the selector.
NODE_LABEL = "bench"
THIS_SCRIPT = "bench (this script)"
_CLK_TCK = os.sysconf("SC_CLK_TCK")  # /proc/<pid>/stat counts CPU time in these ticks
_CREATE_CONCURRENCY = 32  # requests in flight at once, as many clients applying together would
_NODES_READY_TIMEOUT_S = 300.0  # kwok marks nodes Ready in well under a second each


class _Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass
class Result:
    n: int
    ready: int
    backend: Backend = "karpenter"
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
    # process → CPU seconds per Workspace, apply to last ready; the minimum's during its writes.
    cpu_s: dict[str, float] = field(default_factory=dict)
    baseline_cpu_s: dict[str, float] = field(default_factory=dict)


def workspace(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": f"ws-{index:04d}", "namespace": NAMESPACE},
        "resource": {
            "instanceType": "Standard_NC6s_v3",
            "labelSelector": {"matchLabels": {NODE_LABEL: f"ws-{index:04d}"}},
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


def _proc_stat(entry: Path) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        text = (entry / "stat").read_text()
    except OSError:  # the process ended between listing /proc and reading it
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_by_group() -> dict[int, float]:
    """CPU seconds (utime + stime) of every process, summed by process group.

    Each ManagedProcess leads a group of its own, so this counts a component together with
    anything it forked (none of them do now).
    """
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(entry)
        if fields is None:
            continue
        # Fields 5, 14 and 15 of proc(5): pgrp, utime, stime (here from field 3, the state).
        group, utime, stime = int(fields[2]), int(fields[11]), int(fields[12])
        ticks[group] = ticks.get(group, 0) + utime + stime
    return {group: count / _CLK_TCK for group, count in ticks.items()}


def cpu_sample(processes: dict[str, ManagedProcess]) -> dict[str, float]:
    """CPU seconds so far of each named process (and of this script, its watch and requests)."""
    groups = cpu_by_group()
    own = os.times()
    sample = {
        name: groups[p.pid]
        for name, p in processes.items()
        if p.pid is not None and p.pid in groups
    }
    sample[THIS_SCRIPT] = own.user + own.system
    return sample


def cpu_per_workspace(
    before: dict[str, float], after: dict[str, float], n: int
) -> dict[str, float]:
    return {name: (after[name] - before[name]) / n for name in before if name in after}


def measured_processes(
    cluster: LocalCluster,
    nats: LocalNats | None = None,
    capacity: Iterable[ManagedProcess | LocalKarpenter] = (),
    services: Iterable[ManagedProcess] = (),
) -> dict[str, ManagedProcess]:
    """Every process of the system by name: the control plane, NATS, Karpenter, the services."""
    found = dict(cluster.processes)
    if nats is not None:
        found["nats-server"] = nats.process
    for part in capacity:
        process = part.process if isinstance(part, LocalKarpenter) else part
        if process is not None:
            found[process.name] = process
    for service in services:
        found[service.name.removeprefix("kairyu_")] = service
    return found


async def _create(
    kube: KubeClient, resource: resources.Resource, docs: list[dict[str, Any]]
) -> None:
    """Create the objects concurrently, as many clients applying at once would (kubectl's own
    client-side rate limit would spread 500 creations over minutes)."""
    gate = asyncio.Semaphore(_CREATE_CONCURRENCY)

    async def create(doc: dict[str, Any]) -> None:
        async with gate:
            namespace = doc["metadata"].get("namespace")
            await kube.request("POST", resource.path(namespace=namespace), body=doc)

    await asyncio.gather(*(create(doc) for doc in docs))


async def _create_all(cluster: LocalCluster, docs: list[dict[str, Any]]) -> None:
    async with await KubeClient.connect(cluster.kubeconfig) as kube:
        await _create(kube, resources.WORKSPACES, docs)


def _has_condition(obj: JSON, kind: str) -> bool:
    """`kind` is True and, where the condition says which generation it describes, this one's."""
    generation = obj["metadata"].get("generation")
    return any(
        c.get("type") == kind
        and c.get("status") == "True"
        and c.get("observedGeneration", generation) == generation
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def workspace_ready(obj: JSON) -> bool:
    return _has_condition(obj, "WorkspaceReady")


def node_ready(obj: JSON) -> bool:
    return _has_condition(obj, "Ready")


async def _first_times(
    kube: KubeClient,
    resource: resources.Resource,
    *,
    names: set[str],
    reached: Callable[[JSON], bool],
    started: float,
    seen: dict[str, float],
    all_seen: asyncio.Event,
    namespace: str | None = None,
    label_selector: str | None = None,
) -> None:
    """One watch: the seconds since `started` at which each of `names` first `reached`, into
    `seen`; sets `all_seen` when every one has, and watches on until cancelled."""
    async for event in watch(kube, resource, namespace=namespace, label_selector=label_selector):
        name = event.object["metadata"]["name"]
        if name in names and name not in seen and reached(event.object):
            seen[name] = time.monotonic() - started
            if len(seen) == len(names):
                all_seen.set()


async def _create_and_wait(
    cluster: LocalCluster,
    resource: resources.Resource,
    docs: list[dict[str, Any]],
    *,
    reached: Callable[[JSON], bool],
    timeout_s: float,
    namespace: str | None = None,
    label_selector: str | None = None,
) -> tuple[dict[str, float], float]:
    """Create `docs` at once and watch them until each has `reached` or `timeout_s` is up.

    Returns the seconds from the first create to each object's first state that `reached`, and
    the seconds waited in all. The watch starts first, so no change is missed; it is one LIST and
    one WATCH request (a resumed WATCH after the server's timeout), not a poll.
    """
    names = {doc["metadata"]["name"] for doc in docs}
    seen: dict[str, float] = {}
    all_seen = asyncio.Event()
    async with await KubeClient.connect(cluster.kubeconfig) as kube:
        started = time.monotonic()
        follower = asyncio.create_task(
            _first_times(
                kube,
                resource,
                names=names,
                reached=reached,
                started=started,
                seen=seen,
                all_seen=all_seen,
                namespace=namespace,
                label_selector=label_selector,
            )
        )
        waiter = asyncio.create_task(all_seen.wait())
        try:
            await _create(kube, resource, docs)
            await asyncio.wait(
                {follower, waiter},
                timeout=max(0.0, timeout_s - (time.monotonic() - started)),
                return_when=asyncio.FIRST_COMPLETED,
            )
            waited = time.monotonic() - started
            if follower.done():
                follower.result()  # the watch gave up: raise why
        finally:
            for task in (follower, waiter):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return seen, waited


def make_nodes(cluster: LocalCluster, n: int) -> None:
    """byo: one ready GPU node per Workspace, labelled to match its selector, before the apply."""
    nodes = [
        gpu_node_manifest(f"bench-gpu-{i:04d}", EXAMPLE_NODES, labels={NODE_LABEL: f"ws-{i:04d}"})
        for i in range(n)
    ]
    ready, _ = asyncio.run(
        _create_and_wait(
            cluster,
            resources.NODES,
            nodes,
            reached=node_ready,
            timeout_s=_NODES_READY_TIMEOUT_S,
            label_selector=NODE_LABEL,
        )
    )
    if len(ready) < n:
        raise TimeoutError(f"{len(ready)} of {n} pre-made nodes Ready")


@dataclass
class System:
    """The local system as `make dev` runs it: control plane, NATS, capacity, the services."""

    cluster: LocalCluster
    nats: LocalNats
    capacity: list[ManagedProcess | LocalKarpenter]
    services: list[ManagedProcess]
    ports: dict[str, int]  # service → its health/metrics port
    parts: list[_Stoppable]  # all but the cluster, in the order they started

    def stop(self) -> None:
        for part in reversed(self.parts):
            part.stop()
        self.cluster.stop()


def start_system(backend: Backend, nodes: int = 0) -> System:
    """Start everything (byo: `nodes` pre-made GPU nodes, one per Workspace slot) and wait until
    every service is ready; on failure, stop what started."""
    cluster = LocalCluster(Binaries.locate())
    nats = LocalNats()
    parts: list[_Stoppable] = [nats]
    try:
        cluster.start()
        nats.start()
        cluster.install_crds(repo_root())
        # As `make dev` gets them (byo: one seed node too, labelled for no bench Workspace).
        capacity: list[ManagedProcess | LocalKarpenter] = []
        provisioner_env = start_capacity(backend, cluster, capacity)
        parts.extend(capacity)
        if backend == "byo":
            make_nodes(cluster, nodes)
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
    except BaseException:
        for part in reversed(parts):
            part.stop()
        cluster.stop()
        raise
    return System(cluster, nats, capacity, services, ports, parts)


def run_kairyu(
    n: int, timeout_s: float, backend: Backend = "karpenter"
) -> tuple[Result, LocalCluster, list[_Stoppable]]:
    system = start_system(backend, n)
    cluster, nats, services, ports = system.cluster, system.nats, system.services, system.ports
    try:
        processes = measured_processes(cluster, nats, system.capacity, services)
        requests_before = apiserver_requests(cluster)
        ours_before = _service_requests(ports)
        msgs_before, events_before = nats_counts(nats)
        cpu_before = cpu_sample(processes)
        done, waited = asyncio.run(
            _create_and_wait(
                cluster,
                resources.WORKSPACES,
                [workspace(i) for i in range(n)],
                reached=workspace_ready,
                timeout_s=timeout_s,
                namespace=NAMESPACE,
            )
        )
        cpu_after = cpu_sample(processes)
    except BaseException:
        system.stop()
        raise
    result = Result(n=n, ready=len(done), backend=backend, latencies=sorted(done.values()))
    result.wall_s = waited
    result.cpu_s = cpu_per_workspace(cpu_before, cpu_after, n)
    result.all_requests = (apiserver_requests(cluster) - requests_before) / n
    ours = {k: v - ours_before.get(k, 0.0) for k, v in _service_requests(ports).items()}
    result.api_requests = sum(ours.values()) / n
    result.breakdown = {key: count / n for key, count in ours.items() if count}
    msgs_after, events_after = nats_counts(nats)
    result.nats_messages = (msgs_after - msgs_before) / n
    result.events = (events_after - events_before) / n
    result.rss_mib = {p.name.removeprefix("kairyu_"): peak_rss_mib(p) for p in services}
    return result, cluster, [*reversed(system.parts)]


def run_baseline(cluster: LocalCluster, n: int, result: Result) -> None:
    """Only the writes a rollout needs, by one client in order: no watches, events or planning.

    Per Workspace: the plan (status), a NodeClaim (not on byo: the nodes are there), ResourceReady,
    the ConfigMap, Service and Deployment, InferenceReady, then WorkspaceReady with the state: 8
    requests, 7 on byo. The Workspace's own creation is the user's and is counted on neither side.
    """
    cluster.create_namespace(BASELINE_NAMESPACE)
    docs = [workspace(i) for i in range(n)]
    for i, doc in enumerate(docs):
        doc["metadata"] = {"name": f"bl-{i:04d}", "namespace": BASELINE_NAMESPACE}
    asyncio.run(_create_all(cluster, docs))
    processes = measured_processes(cluster)
    before = _kube_requests_here()
    cpu_before = cpu_sample(processes)
    started = time.monotonic()
    asyncio.run(_baseline_writes(cluster, n, nodeclaims=result.backend == "karpenter"))
    result.baseline_wall_s = time.monotonic() - started
    result.baseline_cpu_s = cpu_per_workspace(cpu_before, cpu_sample(processes), n)
    result.baseline_requests = (_kube_requests_here() - before) / n


def _kube_requests_here() -> float:
    return sum(
        sample.value
        for family in metrics.KUBE_REQUESTS.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


async def _baseline_writes(cluster: LocalCluster, n: int, *, nodeclaims: bool) -> None:
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
            if nodeclaims:
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


NODES_FROM: dict[Backend, str] = {
    "karpenter": "GPU nodes from Karpenter (kwok provider)",
    "byo": "GPU nodes made before the apply, one per Workspace (byo; no Karpenter running)",
}


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
    rows += _cpu_rows(results)
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


def kairyu_cpu_s(cpu_s: dict[str, float]) -> float:
    """The services' CPU seconds together (those that ran)."""
    return sum(cpu_s.get(service, 0.0) for service in SERVICES)


def _cpu_rows(results: list[Result]) -> list[str]:
    """CPU seconds per Workspace of each process: kairyu's run and the minimum's, per N."""
    names = list(dict.fromkeys(name for r in results for name in [*r.cpu_s, *r.baseline_cpu_s]))
    names.sort(key=lambda name: name == THIS_SCRIPT)  # the measuring client last
    header = "| process | " + " | ".join(f"N={r.n} | minimum" for r in results) + " |"

    def cell(values: dict[str, float], name: str) -> str:
        return f"{values[name]:.3f}" if name in values else "-"

    rows = [
        "",
        "CPU seconds per Workspace of each process (utime + stime from /proc; kairyu: from the "
        "apply to the last WorkspaceReady, minimum: during its writes):",
        "",
        header,
        "|---" * (2 * len(results) + 1) + "|",
    ]
    for name in names:
        cells = " | ".join(
            f"{cell(r.cpu_s, name)} | {cell(r.baseline_cpu_s, name)}" for r in results
        )
        rows.append(f"| {name} | {cells} |")
    together = ", ".join(f"{kairyu_cpu_s(r.cpu_s):.3f} (N={r.n})" for r in results)
    everything = ", ".join(
        f"{sum(v for k, v in r.cpu_s.items() if k != THIS_SCRIPT):.3f} (N={r.n})" for r in results
    )
    rows += [
        "",
        f"CPU seconds per Workspace of kairyu's {len(SERVICES)} services together: {together}; "
        f"of every process of the system but this script: {everything}.",
    ]
    return rows


def machine() -> str:
    cpus = os.cpu_count()
    memory = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    gib = int(memory) // 1024 // 1024
    python = platform.python_version()
    return f"{platform.system()} {platform.machine()}, {cpus} CPUs, {gib} GiB, Python {python}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument(
        "--backend",
        choices=get_args(Backend),
        default="karpenter",
        help="where GPU nodes come from: real Karpenter (kwok provider) or made up front (byo)",
    )
    parser.add_argument("--timeout-s", type=float, default=900)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    backend: Backend = args.backend
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    results = []
    for n in args.n:
        log.info("N=%d: starting the system (%s)", n, NODES_FROM[backend])
        result, cluster, parts = run_kairyu(n, args.timeout_s, backend)
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
        print(f"{NODES_FROM[backend]}.\n\n{table(results)}", flush=True)  # noqa: T201 - the benchmark's output
    if args.write:
        write(results, backend)


def write(results: list[Result], backend: Backend) -> None:
    """Replace the backend's marked section of docs/benchmarks.md (append it when missing)."""
    path = repo_root() / "docs/benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    marker = (
        "<!-- bench:rollouts -->"
        if backend == "karpenter"
        else f"<!-- bench:rollouts-{backend} -->"
    )
    when = f"{datetime.now(UTC):%Y-%m-%d}"
    block = (
        f"{marker}\nMeasured {when} on {machine()}; {NODES_FROM[backend]}.\n\n"
        f"{table(results)}\n{marker}"
    )
    if marker in text:
        head, _, rest = text.partition(marker)
        _, _, tail = rest.partition(marker)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
