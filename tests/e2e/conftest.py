"""Fixtures of the KAITO v0.12 end-to-end tests: a local Hub endpoint and the five services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import huggingface_hub
import pytest
from rollout_stack import rollout_stack

from kairyu_core.bus import Bus
from kairyu_core.kube import KubeClient
from kairyu_testing.fakehub import FakeHub
from kairyu_testing.stack import ServiceStack


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    """The Hub's model API on 127.0.0.1 (kairyu_testing.fakehub)."""
    with FakeHub() as running:
        yield running
    # The client's pooled connections to the endpoint just closed: close them, not the GC later.
    huggingface_hub.close_session()


@pytest.fixture
async def hub_system(
    karpenter: object, bus: Bus, kube: KubeClient, namespace: str, hub: FakeHub
) -> AsyncIterator[ServiceStack]:
    """All five services in this process, the planner reading models from `hub`."""
    stack = await rollout_stack(bus, kube, namespace, hub_endpoint=hub.endpoint)
    yield stack
    await stack.stop()
