"""`python -m kairyu_provisioner`: provision GPU nodes for planned Workspaces until SIGTERM.

The provisioner reconciles each Workspace from its view of Workspaces, Nodes and NodeClaims
(kairyu_core.service.Controlled); with the azure backend it also scans ARM for orphaned agent
pools, which have no Kubernetes object to wake it. With more than one replica, only the one that
holds the provisioner's Lease reconciles and scans (`service.leading`).

The Azure SDK (azure-identity, azure-mgmt-containerservice: about 35 MiB resident) is imported only
when the azure backend is chosen; byo and karpenter never load it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from kairyu_contracts.catalog import load_catalog
from kairyu_core import service
from kairyu_core.bus import FOLLOWS
from kairyu_core.kube import KubeClient
from kairyu_core.reconciling import Reconcile
from kairyu_core.view import View
from kairyu_provisioner.app import Provisioner
from kairyu_provisioner.backends import Backend
from kairyu_provisioner.backends.byo import ByoBackend
from kairyu_provisioner.backends.karpenter import KarpenterBackend
from kairyu_provisioner.settings import AzureSettings, ProvisionerSettings


@contextlib.asynccontextmanager
async def backend_for(settings: ProvisionerSettings, kube: KubeClient) -> AsyncIterator[Backend]:
    if settings.backend == "byo":
        yield ByoBackend()
    elif settings.backend == "karpenter":
        yield KarpenterBackend(kube, settings.karpenter, field_manager=settings.service_name)
    else:
        # Here, not at the top: see the module docstring.
        from azure.core.pipeline.policies import SansIOHTTPPolicy  # noqa: PLC0415
        from azure.mgmt.containerservice.aio import ContainerServiceClient  # noqa: PLC0415

        from kairyu_provisioner.backends.azure import AzureBackend  # noqa: PLC0415

        async with azure_credential(settings.azure) as credential:
            extra: dict[str, Any] = {}
            if settings.azure.credential == "none":
                # A local endpoint over plain HTTP: no token to send, nothing to protect.
                extra["authentication_policy"] = SansIOHTTPPolicy()
            async with ContainerServiceClient(
                credential,  # type: ignore[arg-type]
                settings.azure.subscription_id,
                base_url=settings.azure.endpoint,
                **extra,
            ) as client:
                yield AzureBackend(client, settings.azure)


@contextlib.asynccontextmanager
async def azure_credential(settings: AzureSettings) -> AsyncIterator[object]:
    if settings.credential == "none":
        yield object()
        return
    from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415 (see the module docstring)

    async with DefaultAzureCredential() as credential:
        yield credential


async def serve(settings: ProvisionerSettings) -> None:
    catalog = load_catalog()
    # Not service.serve_controller: the backend (an ARM client for azure) must be open, and the
    # Karpenter NodePool applied, before the first reconcile, and it needs the Kubernetes client.
    async with (
        service.connections(settings) as (bus, kube),
        backend_for(settings, kube) as backend,
    ):
        await backend.prepare()  # idempotent (an apply): every replica may, and starts ready

        def term() -> list[Coroutine[Any, Any, None]]:
            # Per term of leadership (service.leading): a fresh view, controller and scan.
            made: list[Provisioner] = []

            def reconciler(view: View) -> Reconcile:
                made.append(
                    Provisioner(
                        settings=settings, kube=kube, view=view, catalog=catalog, backend=backend
                    )
                )
                return made[-1].reconcile

            controlled = service.Controlled(
                bus,
                service=settings.service_name,
                kinds=FOLLOWS["provisioner"],
                reconcile=reconciler,
            )
            work = controlled.work()
            if not backend.has_objects:  # agent pools: no Kubernetes object wakes their key
                work.append(made[0].run_orphan_scan(controlled.informer.synced))
            return work

        await service.run_until_stopped(background=[service.leading(settings, kube, term)])


def main() -> None:
    service.main(ProvisionerSettings, serve)


if __name__ == "__main__":
    main()
