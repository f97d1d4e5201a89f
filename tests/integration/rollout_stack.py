"""The services in front of a workload, run in the test's event loop: watcher, planner, provisioner.

Both the deployer's and the tuner's tests need nodes for their Workspaces the way production gets
them (real Karpenter through the provisioner), and then add their own service to the stack.
"""

from __future__ import annotations

from kairyu_core.bus import Bus
from kairyu_core.catalog import Catalog
from kairyu_core.kube import KubeClient
from kairyu_core.testing.stack import ServiceStack
from kairyu_planner.app import CONSUMED as PLANNER_EVENTS
from kairyu_planner.app import Planner
from kairyu_planner.app import consumer_spec as planner_consumer
from kairyu_planner.settings import PlannerSettings
from kairyu_provisioner.app import CONSUMED as PROVISIONER_EVENTS
from kairyu_provisioner.app import Provisioner
from kairyu_provisioner.app import consumer_spec as provisioner_consumer
from kairyu_provisioner.backends.karpenter import KarpenterBackend
from kairyu_provisioner.settings import KarpenterSettings, ProvisionerSettings, ProvisioningSettings
from kairyu_watcher.app import Watcher
from kairyu_watcher.settings import WatcherSettings


async def start_node_services(
    stack: ServiceStack, *, bus: Bus, kube: KubeClient, namespace: str, catalog: Catalog
) -> None:
    stack.run(
        Watcher(
            settings=WatcherSettings(namespace=namespace, resync_interval_s=3600),
            bus=bus,
            kube=kube,
        ).run()
    )
    planning = PlannerSettings()
    stack.consume(
        planner_consumer(planning, bus),
        service=planning.service_name,
        events=PLANNER_EVENTS,
        handler=Planner(settings=planning, bus=bus, kube=kube, catalog=catalog).handle,
    )
    provisioning = ProvisionerSettings(
        namespace=namespace,
        backend="karpenter",
        provisioning=ProvisioningSettings(check_interval_s=1),
    )
    backend = KarpenterBackend(kube, KarpenterSettings(), field_manager=provisioning.service_name)
    await backend.prepare()
    provisioner = Provisioner(
        settings=provisioning, bus=bus, kube=kube, catalog=catalog, backend=backend
    )
    stack.consume(
        provisioner_consumer(provisioning, bus),
        service=provisioning.service_name,
        events=PROVISIONER_EVENTS,
        handler=provisioner.handle,
    )
    stack.run(provisioner.run_periodic())
