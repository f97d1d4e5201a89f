"""The watcher on Service Bus, against the real apiserver: the views it feeds, and its snapshots.

On Service Bus nothing keeps the states, so the watcher sends each kind's first snapshot to every
reader and answers a follower's request for one (docs/bus.md). What a user would notice: a
service's view holds the cluster's objects, follows their changes, and after the watcher was
away it no longer holds an object deleted meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from test_watcher import NAME, SEED, Followed, Running, labelled_pod

from kairyu_core.bus.servicebus import ServiceBusBus
from kairyu_core.bus.servicebus_topology import servicebus_topology
from kairyu_core.bus.topology import StreamSpec
from kairyu_core.kube import KubeClient
from kairyu_localenv import LocalCluster
from kairyu_localenv.servicebus_endpoint import LocalServiceBus
from kairyu_localenv.servicebus_topology_entities import entity_specs
from kairyu_testing.bus import collect_sdk_garbage
from kairyu_watcher.app import Watcher
from kairyu_watcher.settings import WatcherSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

KEYS = {"kairyu": "local-secret"}
TOPOLOGY = servicebus_topology(StreamSpec(name="kairyu"), lock_duration_s=10)


@pytest.fixture
async def endpoint() -> AsyncIterator[LocalServiceBus]:
    with LocalServiceBus(entity_specs(TOPOLOGY), keys=KEYS) as local:
        yield local
    collect_sdk_garbage()


async def _connect(endpoint: LocalServiceBus, service: str) -> ServiceBusBus:
    return await ServiceBusBus.connect(
        endpoint.connection_string("kairyu"), service=service, topology=TOPOLOGY
    )


async def test_a_view_over_service_bus_follows_the_cluster_and_forgets_what_went_while_away(
    cluster: LocalCluster, kube: KubeClient, namespace: str, endpoint: LocalServiceBus
) -> None:
    settings = WatcherSettings(namespace=namespace, resync_interval_s=3600)
    async with (
        await _connect(endpoint, "watcher") as watcher_bus,
        await _connect(endpoint, "deployer") as deployer_bus,
    ):
        followed = Followed(deployer_bus)
        watcher = Running(Watcher(settings=settings, bus=watcher_bus, kube=kube))
        try:
            cluster.kubectl("apply", "-n", namespace, "-f", str(SEED))
            cluster.kubectl("apply", "-f", "-", input=json.dumps(labelled_pod(namespace)))
            key = f"{namespace}/{NAME}"
            await followed.until(lambda: followed.generation() == 1, timeout=60)
            await followed.until(lambda: followed.view.owned("Pod", key), timeout=60)

            # Away: the pod is deleted and nobody says so on the bus.
            await watcher.stop()
            cluster.kubectl("delete", "pod", "inference-0", "-n", namespace, "--wait=false")
            watcher = Running(Watcher(settings=settings, bus=watcher_bus, kube=kube))
            # Back: its first snapshot replaces the view, without the pod.
            await followed.until(lambda: not followed.view.owned("Pod", key), timeout=60)
            assert followed.generation() == 1
        finally:
            await watcher.stop()
            await followed.close()
