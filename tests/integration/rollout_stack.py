"""kairyu's services run in the test's event loop, wired as their `__main__` wires them.

The node services (watcher, planner, provisioner with real Karpenter) give Workspaces their nodes
the way production does; the deployer's, the tuner's and the end-to-end tests add the workload
services they need on top.
"""

from __future__ import annotations

from collections.abc import Callable

from kairyu_activator.app import Activator
from kairyu_activator.serving import listen
from kairyu_activator.settings import ActivatorHttpSettings, ActivatorSettings
from kairyu_contracts.catalog import Catalog, load_catalog
from kairyu_core.bus import FOLLOWS, Bus
from kairyu_core.kube import KubeClient
from kairyu_core.reconciling import Reconcile
from kairyu_core.view import View
from kairyu_deployer.app import Deployer
from kairyu_deployer.settings import DeployerSettings
from kairyu_planner.app import Planner, followed
from kairyu_planner.settings import AutoscalingSettings, HubSettings, PlannerSettings
from kairyu_provisioner.app import Provisioner
from kairyu_provisioner.backends.karpenter import KarpenterBackend
from kairyu_provisioner.settings import KarpenterSettings, ProvisionerSettings, ProvisioningSettings
from kairyu_testing.stack import ServiceStack
from kairyu_tuner.app import Tuner
from kairyu_tuner.settings import JobSettings, TunerSettings
from kairyu_watcher.app import Watcher
from kairyu_watcher.settings import WatcherSettings


async def start_node_services(
    stack: ServiceStack,
    *,
    bus: Bus,
    kube: KubeClient,
    namespace: str,
    catalog: Catalog,
    provisioner: bool = True,
    hub_endpoint: str | None = None,
    activator_url: str | None = None,
) -> None:
    """The watcher, the planner and (unless told not to) the provisioner: each its view."""
    stack.run(
        Watcher(
            settings=WatcherSettings(namespace=namespace, resync_interval_s=3600),
            bus=bus,
            kube=kube,
        ).run()
    )
    planning = PlannerSettings(
        hub=HubSettings(endpoint=hub_endpoint or HubSettings().endpoint),
        autoscaling=AutoscalingSettings(
            activator_url=activator_url or AutoscalingSettings().activator_url
        ),
    )
    stack.control(
        service=planning.service_name,
        kinds=followed(planning.planning),
        reconcile=lambda view: (
            Planner(settings=planning, kube=kube, view=view, catalog=catalog).reconcile
        ),
    )
    if not provisioner:
        return
    provisioning = ProvisionerSettings(
        namespace=namespace,
        backend="karpenter",
        provisioning=ProvisioningSettings(check_interval_s=1),
    )
    backend = KarpenterBackend(kube, KarpenterSettings(), field_manager=provisioning.service_name)
    await backend.prepare()
    stack.control(
        service=provisioning.service_name,
        kinds=FOLLOWS["provisioner"],
        reconcile=lambda view: (
            Provisioner(
                settings=provisioning, kube=kube, view=view, catalog=catalog, backend=backend
            ).reconcile
        ),
    )


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
    """The deployer and / or the tuner, behind the node services: each its view and controller."""
    if deployer:
        deploying = DeployerSettings(namespace=namespace)
        stack.control(
            service=deploying.service_name,
            kinds=FOLLOWS["deployer"],
            reconcile=lambda view: Deployer.for_term(deploying, kube, view),
        )
    if tuner:
        job = JobSettings(tuning_image=tuning_image) if tuning_image else JobSettings()
        tuning = TunerSettings(namespace=namespace, job=job)
        stack.control(
            service=tuning.service_name,
            kinds=FOLLOWS["tuner"],
            reconcile=lambda view: Tuner.for_term(tuning, kube, view),
        )


def start_activator(
    stack: ServiceStack,
    *,
    kube: KubeClient,
    settings: ActivatorHttpSettings,
    address_of: Callable[[str], str] | None = None,
) -> Activator:
    """The activator, its view and controller, and both listeners (on the ports `settings` name).

    `address_of`: how a pod's runtime is reached; kwok's pods run nothing, so tests point it
    at stand-ins that serve vLLM's /metrics in the pods' place.
    """
    service_name = ActivatorSettings().service_name
    made: list[Activator] = []

    def reconcile(view: View) -> Reconcile:
        activator = Activator(
            settings=settings,
            kube=kube,
            view=view,
            field_manager=service_name,
            address_of=address_of,
        )
        made.append(activator)
        return activator.reconcile

    stack.control(service=service_name, kinds=FOLLOWS["activator"], reconcile=reconcile)
    (activator,) = made

    stack.run(listen(activator, settings))
    return activator


async def rollout_stack(
    bus: Bus,
    kube: KubeClient,
    namespace: str,
    *,
    deployer: bool = True,
    tuner: bool = True,
    tuning_image: str | None = None,
    hub_endpoint: str | None = None,
    activator_url: str | None = None,
) -> ServiceStack:
    """Node services plus the chosen workload services, running; stop the stack when done."""
    stack = ServiceStack(bus)
    catalog = load_catalog()
    await start_node_services(
        stack,
        bus=bus,
        kube=kube,
        namespace=namespace,
        catalog=catalog,
        hub_endpoint=hub_endpoint,
        activator_url=activator_url,
    )
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
