"""kairyu's services run in the test's event loop, wired as their `__main__` wires them.

The node services (watcher, planner, provisioner with real Karpenter) give Workspaces their nodes
the way production does; the deployer's, the tuner's and the end-to-end tests add the workload
services they need on top.
"""

from __future__ import annotations

from kairyu_core.bus import Bus
from kairyu_core.catalog import Catalog, load_catalog
from kairyu_core.kube import KubeClient
from kairyu_core.testing.stack import ServiceStack
from kairyu_deployer.app import CONSUMED as DEPLOYER_EVENTS
from kairyu_deployer.app import Deployer
from kairyu_deployer.app import consumer_spec as deployer_consumer
from kairyu_deployer.settings import DeployerSettings
from kairyu_planner.app import CONSUMED as PLANNER_EVENTS
from kairyu_planner.app import Planner
from kairyu_planner.app import consumer_spec as planner_consumer
from kairyu_planner.settings import PlannerSettings
from kairyu_provisioner.app import CONSUMED as PROVISIONER_EVENTS
from kairyu_provisioner.app import Provisioner
from kairyu_provisioner.app import consumer_spec as provisioner_consumer
from kairyu_provisioner.backends.karpenter import KarpenterBackend
from kairyu_provisioner.settings import KarpenterSettings, ProvisionerSettings, ProvisioningSettings
from kairyu_tuner.app import CONSUMED as TUNER_EVENTS
from kairyu_tuner.app import Tuner
from kairyu_tuner.app import consumer_spec as tuner_consumer
from kairyu_tuner.settings import JobSettings, TunerSettings
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


def start_workload_services(
    stack: ServiceStack,
    *,
    bus: Bus,
    kube: KubeClient,
    namespace: str,
    catalog: Catalog,
    deployer: bool = True,
    tuner: bool = True,
    tuning_image: str | None = None,
) -> None:
    """The deployer and / or the tuner, behind the node services."""
    if deployer:
        deploying = DeployerSettings(namespace=namespace)
        stack.consume(
            deployer_consumer(deploying, bus),
            service=deploying.service_name,
            events=DEPLOYER_EVENTS,
            handler=Deployer(settings=deploying, bus=bus, kube=kube, catalog=catalog).handle,
        )
    if tuner:
        job = JobSettings(tuning_image=tuning_image) if tuning_image else JobSettings()
        tuning = TunerSettings(namespace=namespace, job=job)
        stack.consume(
            tuner_consumer(tuning, bus),
            service=tuning.service_name,
            events=TUNER_EVENTS,
            handler=Tuner(settings=tuning, bus=bus, kube=kube, catalog=catalog).handle,
        )


async def rollout_stack(
    bus: Bus,
    kube: KubeClient,
    namespace: str,
    *,
    deployer: bool = True,
    tuner: bool = True,
    tuning_image: str | None = None,
) -> ServiceStack:
    """Node services plus the chosen workload services, running; stop the stack when done."""
    stack = ServiceStack(bus)
    catalog = load_catalog()
    await start_node_services(stack, bus=bus, kube=kube, namespace=namespace, catalog=catalog)
    start_workload_services(
        stack,
        bus=bus,
        kube=kube,
        namespace=namespace,
        catalog=catalog,
        deployer=deployer,
        tuner=tuner,
        tuning_image=tuning_image,
    )
    return stack
