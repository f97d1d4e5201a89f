"""Leader election on a real Lease: one candidate works, a standby takes over, a loser stops.

The last tests run it as every reconciling service does (`kairyu_core.service.leading`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from kairyu_core import service
from kairyu_core.bus import Bus, StreamSpec
from kairyu_core.informing import Informer
from kairyu_core.kube import KubeClient, errors, resources
from kairyu_core.kube.leadership import Lease, lead
from kairyu_core.settings import KubeTimeouts, LeaderElectionSettings, ServiceSettings
from kairyu_core.view import View
from kairyu_localenv import LocalCluster, LocalNats
from kairyu_localenv.processes import ManagedProcess, free_port
from kairyu_testing.proxy import SilentProxy
from kairyu_testing.seeds import seed
from kairyu_testing.service_processes import service_process

pytestmark = pytest.mark.integration


class Candidate:
    """One process's `lead`, with work that records when it runs and until it is cancelled."""

    def __init__(self, kube: KubeClient, lease: Lease) -> None:
        self.identity = lease.identity
        self.started: list[float] = []
        self.stopped: list[float] = []
        self.task = asyncio.create_task(lead(kube, lease, self._work))

    async def _work(self) -> None:
        self.started.append(time.monotonic())
        try:
            await asyncio.Event().wait()
        finally:
            self.stopped.append(time.monotonic())

    @property
    def working(self) -> bool:
        return len(self.started) > len(self.stopped)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def candidates(kube: KubeClient, namespace: str) -> AsyncIterator[Callable[..., Candidate]]:
    made: list[Candidate] = []

    def make(identity: str, **timing: float) -> Candidate:
        lease = Lease(name="kairyu-watcher", namespace=namespace, identity=identity, **timing)
        made.append(Candidate(kube, lease))
        return made[-1]

    yield make
    for candidate in made:
        await candidate.stop()


async def eventually(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until `check()` held; fails after `timeout`."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "did not happen in time"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


FAST = {"duration_s": 8.0, "renew_deadline_s": 5.0, "retry_s": 1.0}


async def test_one_candidate_works_and_a_standby_takes_over_at_once_when_it_stops(
    candidates: Callable[..., Candidate], kube: KubeClient, namespace: str
) -> None:
    a = candidates("watcher-a", **FAST)
    b = candidates("watcher-b", **FAST)
    await eventually(lambda: a.working or b.working, timeout=10)
    await asyncio.sleep(2.5)  # a couple of renewals: still exactly one at work
    assert [a.working, b.working].count(True) == 1
    leader, standby = (a, b) if a.working else (b, a)
    live = await kube.get(resources.LEASES, "kairyu-watcher", namespace=namespace)
    assert live["spec"]["holderIdentity"] == leader.identity

    await leader.stop()  # a rolling update's SIGTERM: the lease is handed back
    waited = await eventually(lambda: standby.working, timeout=7)
    # Well inside the 8 s lease: the standby did not wait for it to expire.
    assert waited < 6, f"the standby took {waited:.1f} s"
    live = await kube.get(resources.LEASES, "kairyu-watcher", namespace=namespace)
    assert live["spec"]["holderIdentity"] == standby.identity
    assert live["spec"]["leaseTransitions"] >= 1


async def test_a_leader_that_loses_its_lease_stops_its_work_until_it_wins_again(
    candidates: Callable[..., Candidate], kube: KubeClient, namespace: str
) -> None:
    a = candidates("watcher-a", duration_s=4.0, renew_deadline_s=3.0, retry_s=0.5)
    await eventually(lambda: a.working, timeout=10)
    # Another holder appears (say, a partition healed in its favour) and then goes silent.
    live: dict[str, Any] = await kube.get(resources.LEASES, "kairyu-watcher", namespace=namespace)
    live["spec"]["holderIdentity"] = "watcher-elsewhere"
    await kube.request(
        "PUT", resources.LEASES.path(namespace=namespace, name="kairyu-watcher"), body=live
    )
    await eventually(lambda: not a.working, timeout=3)
    assert len(a.started) == 1
    # The other holder never renews: once its 4 s are over, a leads again with fresh work.
    await eventually(lambda: a.working, timeout=10)
    assert len(a.started) == 2


async def test_a_leader_whose_renewals_hang_stops_working_before_a_standby_takes_over(
    cluster: LocalCluster,
    kube: KubeClient,
    namespace: str,
    candidates: Callable[..., Candidate],
    tmp_path: Path,
) -> None:
    timing = {"duration_s": 6.0, "renew_deadline_s": 3.0, "retry_s": 0.5}
    lease = Lease(name="kairyu-watcher", namespace=namespace, identity="watcher-a", **timing)
    async with SilentProxy("127.0.0.1", int(cluster.server.rsplit(":", 1)[1])) as proxy:
        kubeconfig = proxy.kubeconfig(Path(cluster.kubeconfig), tmp_path / "kubeconfig")
        # Client timeouts far beyond the renew deadline: the deadline alone must end the work.
        timeouts = KubeTimeouts(read_s=60.0, request_s=60.0)
        async with await KubeClient.connect(kubeconfig, timeouts=timeouts) as cut_off:
            a = Candidate(cut_off, lease)
            try:
                await eventually(lambda: a.working, timeout=10)
                standby = candidates("watcher-b", **timing)  # on a connection that works
                proxy.stall()  # a's renewals now hang on a half-open connection
                stalled_at = time.monotonic()
                await eventually(lambda: not a.working, timeout=10)
                assert a.stopped[0] - stalled_at <= timing["renew_deadline_s"] + 0.5
                await eventually(lambda: standby.working, timeout=10)
                assert standby.started[0] > a.stopped[0], "never two at work"
            finally:
                await a.stop()


async def test_work_that_fails_ends_the_leadership_with_its_error(
    kube: KubeClient, namespace: str
) -> None:
    lease = Lease(name="kairyu-watcher", namespace=namespace, identity="watcher-a", **FAST)

    async def broken() -> None:
        raise RuntimeError("cannot watch")

    with pytest.raises(RuntimeError, match="cannot watch"):
        await asyncio.wait_for(lead(kube, lease, broken), timeout=10)
    live = await kube.get(resources.LEASES, "kairyu-watcher", namespace=namespace)
    assert not live["spec"].get("holderIdentity"), "a standby may take it at once"


def watcher_process(identity: str, **where: Any) -> ManagedProcess:
    """A watcher process that leads on an 8 s Lease in the test's namespace."""
    election = {
        "ENABLED": "true",
        "NAMESPACE": where["namespace"],
        "IDENTITY": identity,
        "DURATION_S": "8",
        "RENEW_DEADLINE_S": "5",
        "RETRY_S": "1",
    }
    env = {f"KAIRYU_LEADER_ELECTION__{k}": v for k, v in election.items()}
    return service_process("watcher", name=identity, env=env, **where)


async def test_of_two_watcher_processes_one_leads_and_the_other_takes_over_on_sigterm(
    *,
    cluster: LocalCluster,
    nats_server: LocalNats,
    stream_spec: StreamSpec,
    bus: Bus,
    kube: KubeClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    watchers = {
        name: watcher_process(
            name,
            cluster=cluster,
            nats=nats_server,
            stream=stream_spec,
            namespace=namespace,
            log_dir=tmp_path,
        )
        for name in ("watcher-a", "watcher-b")
    }
    for process in watchers.values():
        process.start()
    view = View(["Workspace"])
    following = asyncio.create_task(Informer(bus, view, lambda keys: None).run())

    async def stored(name: str, timeout: float = 20.0) -> None:
        """The leading watcher stored the Workspace's state on NATS."""
        async with asyncio.timeout(timeout):
            while view.workspace(f"{namespace}/{name}") is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    try:

        async def holder() -> str:
            with contextlib.suppress(errors.NotFoundError):
                live = await kube.get(resources.LEASES, "kairyu-watcher", namespace=namespace)
                return str(live["spec"].get("holderIdentity") or "")
            return ""

        first = ""
        for _ in range(150):
            if first := await holder():
                break
            await asyncio.sleep(0.1)
        assert first in watchers, f"no watcher took the lease:\n{watchers['watcher-a'].log_tail()}"
        await asyncio.to_thread(cluster.apply, in_namespace(seed("inference"), namespace, "one"))
        await stored("one")

        await asyncio.to_thread(watchers[first].stop)  # SIGTERM: it hands the lease back
        (second,) = set(watchers) - {first}
        await asyncio.to_thread(cluster.apply, in_namespace(seed("inference"), namespace, "two"))
        await stored("two", timeout=15)
        assert await holder() == second
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        for process in watchers.values():
            process.stop()


def in_namespace(doc: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    doc["metadata"] = {"name": name, "namespace": namespace}
    return doc


# ---------------------------------------------------------------- every service: service.leading


class Replica:
    """One replica's `service.leading` over a controller whose reconciles record when they ran.

    Each reconcile asks to run again 50 ms later, so the leader reconciles all the time: any
    overlap with another replica's reconciles would show.
    """

    KEYS = ("ns/a", "ns/b", "ns/c")

    def __init__(self, name: str, *, bus: Bus, kube: KubeClient, settings: ServiceSettings) -> None:
        self.name = name
        self.runs: list[tuple[float, float]] = []
        self.terms = 0
        self.task = asyncio.create_task(service.leading(settings, kube, self._term))
        self._bus = bus

    def _term(self) -> list[Coroutine[Any, Any, None]]:
        self.terms += 1
        controlled = service.Controlled(
            self._bus, service="kairyu-test", kinds=["Workspace"], reconcile=lambda _: self._one
        )
        controlled.controller.enqueue(self.KEYS)
        return controlled.work()

    async def _one(self, key: str) -> float:
        started = time.monotonic()
        try:
            await asyncio.sleep(0.02)
        finally:
            self.runs.append((started, time.monotonic()))
        return 0.05

    def reconciled_since(self, moment: float) -> int:
        return sum(1 for started, _ in self.runs if started >= moment)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def election(namespace: str, identity: str, timing: dict[str, float]) -> ServiceSettings:
    return ServiceSettings(
        service_name="kairyu-test",
        leader_election=LeaderElectionSettings.model_validate(
            {"enabled": True, "namespace": namespace, "identity": identity, **timing}
        ),
    )


def overlapping(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[Any]:
    return [(x, y) for x in a for y in b if x[0] < y[1] and y[0] < x[1]]


async def test_two_replicas_never_reconcile_at_once_and_a_standby_takes_over_a_cut_off_leader(
    cluster: LocalCluster, kube: KubeClient, bus: Bus, namespace: str, tmp_path: Path
) -> None:
    timing = {"duration_s": 6.0, "renew_deadline_s": 3.0, "retry_s": 0.5}
    async with SilentProxy("127.0.0.1", int(cluster.server.rsplit(":", 1)[1])) as proxy:
        kubeconfig = proxy.kubeconfig(Path(cluster.kubeconfig), tmp_path / "kubeconfig")
        async with await KubeClient.connect(kubeconfig) as cut_off:
            a = Replica("a", bus=bus, kube=cut_off, settings=election(namespace, "a", timing))
            await eventually(lambda: len(a.runs) > 3, timeout=15)  # a leads
            b = Replica("b", bus=bus, kube=kube, settings=election(namespace, "b", timing))
            try:
                await asyncio.sleep(3)  # several renewals: b stays a standby
                assert b.terms == 0
                assert not b.runs
                live = await kube.get(resources.LEASES, "kairyu-test", namespace=namespace)
                assert live["spec"]["holderIdentity"] == "a"

                proxy.stall()  # a is cut off from the apiserver: it can no longer renew
                stalled_at = time.monotonic()
                await eventually(lambda: bool(b.runs), timeout=20)
                assert a.reconciled_since(stalled_at + timing["renew_deadline_s"] + 0.5) == 0
                assert overlapping(a.runs, b.runs) == [], "two replicas reconciled at once"
                assert min(s for s, _ in b.runs) > max(e for _, e in a.runs)
                assert b.terms == 1  # b's own view and controller, made when it won
            finally:
                await a.stop()
                await b.stop()


def metric_total(port: int, name: str) -> float:
    """The sum of every sample of `name` on a service's /metrics; 0 before its first one."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


async def test_of_two_deployer_processes_one_reconciles_and_the_other_takes_over_on_sigkill(
    *,
    cluster: LocalCluster,
    nats_server: LocalNats,
    stream_spec: StreamSpec,
    bus: Bus,
    kube: KubeClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    where: dict[str, Any] = {
        "cluster": cluster,
        "nats": nats_server,
        "stream": stream_spec,
        "namespace": namespace,
        "log_dir": tmp_path,
    }
    watcher = service_process("watcher", name="watcher", **where)  # stores the states they read
    ports = {name: free_port() for name in ("deployer-a", "deployer-b")}
    fast = {"ENABLED": "true", "NAMESPACE": namespace, "DURATION_S": "6"}
    fast |= {"RENEW_DEADLINE_S": "4", "RETRY_S": "1"}
    deployers = {
        name: service_process(
            "deployer",
            name=name,
            env={
                "KAIRYU_HEALTH_PORT": str(port),
                "KAIRYU_LEADER_ELECTION__IDENTITY": name,
                **{f"KAIRYU_LEADER_ELECTION__{k}": v for k, v in fast.items()},
            },
            **where,
        )
        for name, port in ports.items()
    }

    def reconciles(name: str) -> float:
        try:
            return metric_total(ports[name], "kairyu_reconciles_total")
        except OSError:
            return 0.0

    async def holder() -> str:
        with contextlib.suppress(errors.NotFoundError):
            live = await kube.get(resources.LEASES, "kairyu-deployer", namespace=namespace)
            return str(live["spec"].get("holderIdentity") or "")
        return ""

    try:
        for process in (watcher, *deployers.values()):
            process.start()
        await asyncio.to_thread(cluster.apply, in_namespace(seed("inference"), namespace, "one"))
        first = ""
        for _ in range(300):
            if (first := await holder()) and await asyncio.to_thread(reconciles, first) > 0:
                break
            await asyncio.sleep(0.1)
        assert first in deployers, deployers["deployer-a"].log_tail()
        (second,) = set(deployers) - {first}
        await asyncio.to_thread(cluster.apply, in_namespace(seed("inference"), namespace, "two"))
        await asyncio.sleep(3)  # the leader reconciles "two"; the standby must not
        assert await asyncio.to_thread(reconciles, second) == 0, deployers[second].log_tail()

        deployers[first].kill()  # SIGKILL: no hand-back, the standby waits for the Lease to end
        await eventually(lambda: reconciles(second) > 0, timeout=30)
        assert await holder() == second
    finally:
        for process in (*deployers.values(), watcher):
            process.stop()
