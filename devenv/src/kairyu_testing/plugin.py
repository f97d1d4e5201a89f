"""pytest fixtures: one real control plane and one nats-server per session, fresh names per test.

Tests that use `cluster` or `nats_server` (directly or through another fixture) are marked
`integration` automatically, so `pytest -m "not integration"` is the fast unit subset.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kairyu_contracts.subjects import Subjects
from kairyu_core import tracing
from kairyu_core.bus import Bus, StreamSpec
from kairyu_core.kube import KubeClient
from kairyu_localenv import Binaries, LocalCluster, LocalNats
from kairyu_localenv.binaries import repo_root
from kairyu_localenv.karpenter_kwok import LocalKarpenter
from kairyu_localenv.keda import LocalKeda
from kairyu_testing.bus import collect_sdk_garbage

_INTEGRATION_FIXTURES = {"cluster", "nats_server"}
_EXPORTER = InMemorySpanExporter()


def pytest_configure(config: pytest.Config) -> None:
    tracing.configure("kairyu-tests", processors=[SimpleSpanProcessor(_EXPORTER)])


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Collect what libraries left to the garbage collector before pytest's summary.

    The summary may import modules (hypothesis's plugin imports hypothesis when no test did); a
    leaked socket's finalizer run by the collector inside that compile fails the whole run on
    Python 3.11 ("AST constructor recursion depth mismatch"; `bus.collect_sdk_garbage`). This
    runs before the terminal summary, which comes after every plain sessionfinish hook.
    """
    collect_sdk_garbage()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def unique(prefix: str) -> str:
    """A name no other test uses: `prefix-` and 8 hex digits (valid for Kubernetes and NATS)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """The session's control plane, with the Workspace CRD installed."""
    with LocalCluster(Binaries.locate()) as local:
        local.install_crds(repo_root())
        yield local


@pytest.fixture(scope="session")
def karpenter(cluster: LocalCluster) -> Iterator[LocalKarpenter]:
    """Real Karpenter (kwok provider) turning NodeClaims into kwok GPU nodes of the cluster."""
    with LocalKarpenter(cluster) as running:
        yield running


@pytest.fixture(scope="session")
def keda(cluster: LocalCluster) -> Iterator[LocalKeda]:
    """Real KEDA: its operator, and its metrics server behind the apiserver's aggregation layer."""
    with LocalKeda(cluster) as running:
        yield running


@pytest.fixture(scope="session")
def nats_server() -> Iterator[LocalNats]:
    with LocalNats() as server:
        yield server


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    """A fresh namespace where pods can be created, deleted (without waiting) after the test."""
    name = unique("t")
    cluster.create_namespace(name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
async def kube(cluster: LocalCluster) -> AsyncIterator[KubeClient]:
    client = await KubeClient.connect(Path(cluster.kubeconfig))
    yield client
    await client.close()


@pytest.fixture
def stream_spec() -> StreamSpec:
    """A stream and subject prefix of the test's own."""
    token = uuid.uuid4().hex[:8]
    return StreamSpec(name=f"T{token}", subjects=Subjects(prefix=f"t{token}"))


@pytest.fixture
async def bus(nats_server: LocalNats, stream_spec: StreamSpec) -> AsyncIterator[Bus]:
    connection = await Bus.connect(nats_server.url, name="pytest", stream=stream_spec)
    await connection.create_streams()  # what the set-up step does before any service starts
    yield connection
    await connection.delete_streams()
    await connection.close()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans finished during the test (the session's tracer provider exports here)."""
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()
