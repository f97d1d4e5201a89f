"""`make soak`: Workspaces created and deleted in waves, to see that nothing grows without bound.

One fresh system as `make bench` starts it (tests/bench/rollouts.py: local control plane, NATS,
real Karpenter with its kwok provider or `--backend byo` pre-made nodes, the five services as
their own processes). Then waves until `--total` Workspaces were created: `--wave` inference
Workspaces (names unique per wave) are created at once and watched until each is
`WorkspaceReady`, then all deleted, and the script waits until they are gone (their finalizers
ran) together with their workloads and, with Karpenter, their NodeClaims and nodes. After each
wave it records every service's RSS (VmRSS) and peak (VmHWM), nats-server's RSS, and each
JetStream stream's messages and bytes (nats-server's /jsz), with how many of the state stream's
messages are tombstones of deleted objects (they expire by their Nats-TTL, an hour, so during a
soak they add up to one per deleted object).

At the end it prints a Markdown table of the waves and a verdict per service (its RSS after the
last wave within 10 % of its RSS after the first) and per stream (within its configured limits);
`--write` also puts them into docs/benchmarks.md. Like the bench it measures; the verdicts are
read, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import re
import time
import urllib.request
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import rollouts

from kairyu_contracts.objectstate import KINDS, Kind
from kairyu_core.bus import Bus, Snapshot
from kairyu_core.kube import KubeClient, errors, resources
from kairyu_localenv import LocalCluster
from kairyu_localenv.binaries import repo_root
from kairyu_localenv.processes import ManagedProcess

log = logging.getLogger("kairyu.soak")
MARKER = "<!-- bench:soak -->"
RSS_TOLERANCE = 0.10  # the bound: RSS at the end within +10 % of after the first wave
_GONE_TIMEOUT_S = 600.0  # finalizers, garbage collection and Karpenter's node removal
_GONE_POLL_S = 2.0  # the deletion wait lists what is left this often (not measured: no watch)
_SETTLE_S = 5.0  # after the last object is gone, for the services to handle its last events
_SNAPSHOT_TIMEOUT_S = 60.0  # reading one kind's latest states from the state stream
_MIB = 1024 * 1024


@dataclass
class StreamSample:
    messages: int
    bytes: int
    subjects: int | None
    max_bytes: int
    max_msgs: int
    max_msgs_per_subject: int


@dataclass
class Wave:
    index: int
    created: int  # Workspaces created so far, this wave's included
    ready: int
    wall_s: float  # from the first create to the last WorkspaceReady
    gone_s: float  # from the first delete until everything of the wave is gone
    latencies: list[float] = field(default_factory=list)
    rss_mib: dict[str, float] = field(default_factory=dict)
    peak_mib: dict[str, float] = field(default_factory=dict)
    streams: dict[str, StreamSample] = field(default_factory=dict)
    live_states: int | None = None  # live objects in the state stream; the rest are tombstones


def _status_kib(pid: int | None, key: str) -> float:
    if pid is None:
        return 0.0
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # the process ended
        return 0.0
    match = re.search(rf"^{key}:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) if match else 0.0


def rss_mib(process: ManagedProcess) -> float:
    """The process's resident set now (VmRSS), MiB."""
    return _status_kib(process.pid, "VmRSS") / 1024


def peak_mib(process: ManagedProcess) -> float:
    """The most it was ever resident (VmHWM), MiB."""
    return _status_kib(process.pid, "VmHWM") / 1024


def streams(monitor_port: int) -> dict[str, StreamSample]:
    """Each JetStream stream's state and limits, from nats-server's monitoring endpoint."""
    url = f"http://127.0.0.1:{monitor_port}/jsz?streams=true&config=true"
    with urllib.request.urlopen(url, timeout=5) as r:
        jsz = json.load(r)
    found = {}
    for account in jsz.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            state, config = stream.get("state") or {}, stream.get("config") or {}
            found[stream["name"]] = StreamSample(
                messages=int(state.get("messages", 0)),
                bytes=int(state.get("bytes", 0)),
                subjects=state.get("num_subjects"),
                max_bytes=int(config.get("max_bytes", -1)),
                max_msgs=int(config.get("max_msgs", -1)),
                max_msgs_per_subject=int(config.get("max_msgs_per_subject", -1)),
            )
    return found


async def _live_of(bus: Bus, kind: Kind) -> int:
    """How many objects of `kind` the state stream holds a value (not a tombstone) for."""
    async with contextlib.aclosing(bus.follow_state(kind)) as states:
        async for item in states:
            if isinstance(item, Snapshot):
                return len(item.values)
    return 0


async def live_states(nats_url: str) -> int:
    """Live objects in the state stream, every kind together (its other messages are
    tombstones: the latest message of a deleted object's subject)."""
    async with await Bus.connect(nats_url, name="kairyu-soak") as bus:
        counts = await asyncio.wait_for(
            asyncio.gather(*(_live_of(bus, kind) for kind in KINDS)), _SNAPSHOT_TIMEOUT_S
        )
    return sum(counts)


def wave_docs(index: int, size: int) -> list[dict[str, Any]]:
    """The wave's Workspaces: names unique per wave, each selecting the nodes of its slot (byo's
    pre-made node `ws-<slot>` is reused by every wave)."""
    docs = []
    for slot in range(size):
        doc = rollouts.workspace(slot)
        doc["metadata"]["name"] = f"s{index:03d}-{slot:04d}"
        docs.append(doc)
    return docs


async def _count(
    kube: KubeClient,
    resource: resources.Resource,
    *,
    namespace: str | None = None,
    label_selector: str | None = None,
) -> int:
    listed = await kube.list(resource, namespace=namespace, label_selector=label_selector)
    return len(listed.get("items") or [])


async def _delete_and_wait(cluster: LocalCluster, names: list[str], *, karpenter: bool) -> float:
    """Delete the Workspaces and wait until they, their workloads and (Karpenter) their
    NodeClaims and nodes are gone; the seconds it took."""
    gate = asyncio.Semaphore(rollouts._CREATE_CONCURRENCY)
    async with await KubeClient.connect(cluster.kubeconfig) as kube:
        started = time.monotonic()

        async def delete(name: str) -> None:
            async with gate:
                with contextlib.suppress(errors.NotFoundError):
                    await kube.delete(resources.WORKSPACES, name, namespace=rollouts.NAMESPACE)

        await asyncio.gather(*(delete(name) for name in names))
        while True:
            left: list[Awaitable[int]] = [
                _count(kube, resources.WORKSPACES, namespace=rollouts.NAMESPACE),
                _count(kube, resources.DEPLOYMENTS, namespace=rollouts.NAMESPACE),
                _count(kube, resources.PODS, namespace=rollouts.NAMESPACE),
            ]
            if karpenter:
                left += [
                    _count(kube, resources.NODECLAIMS),
                    _count(kube, resources.NODES, label_selector="karpenter.sh/nodepool"),
                ]
            counts = await asyncio.gather(*left)
            if not any(counts):
                return time.monotonic() - started
            if time.monotonic() - started > _GONE_TIMEOUT_S:
                raise TimeoutError(
                    f"after {_GONE_TIMEOUT_S:.0f}s still there (workspaces, deployments, pods"
                    f"{', nodeclaims, nodes' if karpenter else ''}): {counts}"
                )
            await asyncio.sleep(_GONE_POLL_S)


def run_wave(
    system: rollouts.System,
    *,
    index: int,
    size: int,
    created: int,
    timeout_s: float,
    karpenter: bool,
) -> Wave:
    docs = wave_docs(index, size)
    done, waited = asyncio.run(
        rollouts._create_and_wait(
            system.cluster,
            resources.WORKSPACES,
            docs,
            reached=rollouts.workspace_ready,
            timeout_s=timeout_s,
            namespace=rollouts.NAMESPACE,
        )
    )
    if len(done) < size:
        log.warning("wave %d: only %d of %d Ready after %.0fs", index, len(done), size, waited)
    names = [doc["metadata"]["name"] for doc in docs]
    gone_s = asyncio.run(_delete_and_wait(system.cluster, names, karpenter=karpenter))
    time.sleep(_SETTLE_S)
    wave = Wave(
        index=index,
        created=created + size,
        ready=len(done),
        wall_s=waited,
        gone_s=gone_s,
        latencies=sorted(done.values()),
    )
    for service in system.services:
        name = service.name.removeprefix("kairyu_")
        wave.rss_mib[name] = rss_mib(service)
        wave.peak_mib[name] = peak_mib(service)
    wave.rss_mib["nats-server"] = rss_mib(system.nats.process)
    wave.peak_mib["nats-server"] = peak_mib(system.nats.process)
    wave.streams = streams(system.nats.monitor_port)
    try:
        wave.live_states = asyncio.run(live_states(system.nats.url))
    except TimeoutError:
        log.warning("wave %d: reading the state stream timed out; tombstones not counted", index)
    return wave


def _stream_cell(wave: Wave, name: str) -> str:
    sample = wave.streams.get(name)
    if sample is None:
        return "-"
    cell = f"{sample.messages} / {sample.bytes / _MIB:.2f}"
    if name.endswith("_STATE") and wave.live_states is not None:
        cell += f" ({max(0, sample.messages - wave.live_states)} tombstones)"
    return cell


def table(waves: list[Wave]) -> str:
    services = sorted({s for w in waves for s in w.rss_mib} - {"nats-server"})
    names = sorted({s for w in waves for s in w.streams})
    rows = [
        "| wave | created | ready | wall s | delete s | p50 s | p95 s | "
        + " | ".join(f"{s} MiB" for s in services)
        + " | nats-server MiB | "
        + " | ".join(f"{s} msgs / MiB" for s in names)
        + " |",
        "|---" * (8 + len(services) + len(names)) + "|",
    ]
    for w in waves:
        rss = " | ".join(
            f"{w.rss_mib.get(s, 0):.0f} ({w.peak_mib.get(s, 0):.0f})" for s in services
        )
        stream_cells = " | ".join(_stream_cell(w, s) for s in names)
        rows.append(
            f"| {w.index} | {w.created} | {w.ready} | {w.wall_s:.0f} | {w.gone_s:.0f} "
            f"| {rollouts.pct(w.latencies, 50):.1f} | {rollouts.pct(w.latencies, 95):.1f} "
            f"| {rss} | {w.rss_mib.get('nats-server', 0):.0f} | {stream_cells} |"
        )
    rows += ["", "RSS after each wave (VmRSS, in brackets the peak VmHWM so far), MiB.", ""]
    rows += verdicts(waves)
    return "\n".join(rows)


def verdicts(waves: list[Wave]) -> list[str]:
    """One line per service (RSS at the end against after the first wave) and per stream."""
    if not waves:
        return ["No wave completed."]
    first, last = waves[0], waves[-1]
    lines = []
    for name in sorted(first.rss_mib):
        before, after = first.rss_mib[name], last.rss_mib.get(name, 0.0)
        growth = (after - before) / before if before else math.inf
        within = growth <= RSS_TOLERANCE
        verdict = ("PASS" if within else "FAIL") if name != "nats-server" else "(not judged)"
        lines.append(
            f"- {name}: {before:.0f} MiB after wave 1, {after:.0f} MiB after wave {last.index} "
            f"({growth:+.1%}): {verdict}"
        )
    for name in sorted(last.streams):
        lines.append(f"- stream {name}: {_stream_verdict(name, waves)}")
    return lines


def _stream_verdict(name: str, waves: list[Wave]) -> str:
    samples = [w.streams[name] for w in waves if name in w.streams]
    last = samples[-1]
    worst_bytes = max(s.bytes for s in samples)
    worst_msgs = max(s.messages for s in samples)
    limits, broken = [], []
    if last.max_bytes > 0:
        limits.append(f"max_bytes {last.max_bytes / _MIB:.0f} MiB")
        if worst_bytes > last.max_bytes:
            broken.append("bytes")
    if last.max_msgs > 0:
        limits.append(f"max_msgs {last.max_msgs}")
        if worst_msgs > last.max_msgs:
            broken.append("messages")
    if last.max_msgs_per_subject > 0:
        limits.append(f"max_msgs_per_subject {last.max_msgs_per_subject}")
        if any(
            s.subjects is not None and s.messages > s.subjects * s.max_msgs_per_subject
            for s in samples
        ):
            broken.append("messages per subject")
    verdict = "PASS" if not broken else f"FAIL ({', '.join(broken)} over)"
    return (
        f"at most {worst_msgs} messages, {worst_bytes / _MIB:.2f} MiB "
        f"(limits: {', '.join(limits) or 'none'}): {verdict}"
    )


def write(waves: list[Wave], backend: rollouts.Backend, total: int, size: int) -> None:
    """Replace the marked soak section of docs/benchmarks.md (append it when missing)."""
    path = repo_root() / "docs/benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    when = f"{datetime.now(UTC):%Y-%m-%d}"
    block = (
        f"{MARKER}\nMeasured {when} on {rollouts.machine()}; {rollouts.NODES_FROM[backend]}; "
        f"{total} Workspaces in waves of {size}.\n\n{table(waves)}\n{MARKER}"
    )
    if MARKER in text:
        head, _, rest = text.partition(MARKER)
        _, _, tail = rest.partition(MARKER)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--total", type=int, default=2000, help="Workspaces created in all")
    parser.add_argument("--wave", type=int, default=200, help="Workspaces per wave")
    parser.add_argument(
        "--backend",
        choices=get_args(rollouts.Backend),
        default="karpenter",
        help="where GPU nodes come from: real Karpenter (kwok provider) or made up front (byo)",
    )
    parser.add_argument("--timeout-s", type=float, default=900, help="per wave, until Ready")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    backend: rollouts.Backend = args.backend
    size: int = min(args.wave, args.total)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # This script's own NATS connection (it reads the state stream after each wave) warns that it
    # disconnected each time it closes; the services log on their own, not here.
    logging.getLogger("kairyu_core.bus").setLevel(logging.ERROR)
    log.info("starting the system (%s)", rollouts.NODES_FROM[backend])
    system = rollouts.start_system(backend, size)
    waves: list[Wave] = []
    try:
        created = 0
        while created < args.total:
            n = min(size, args.total - created)
            wave = run_wave(
                system,
                index=len(waves) + 1,
                size=n,
                created=created,
                timeout_s=args.timeout_s,
                karpenter=backend == "karpenter",
            )
            created = wave.created
            waves.append(wave)
            log.info(
                "wave %d: %d/%d ready in %.0fs, gone in %.0fs; RSS %s",
                wave.index,
                wave.ready,
                n,
                wave.wall_s,
                wave.gone_s,
                ", ".join(f"{k} {v:.0f}" for k, v in sorted(wave.rss_mib.items())),
            )
    finally:
        system.stop()
        print(f"{rollouts.NODES_FROM[backend]}.\n\n{table(waves)}", flush=True)  # noqa: T201 - the soak's output
    if args.write:
        write(waves, backend, args.total, size)


if __name__ == "__main__":
    main()
