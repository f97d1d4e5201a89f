"""`python -m kairyu_provisioner`: provision GPU nodes for planned Workspaces until SIGTERM."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.identity.aio import DefaultAzureCredential
from azure.mgmt.containerservice.aio import ContainerServiceClient

from kairyu_core import service
from kairyu_core.bus import Consumer
from kairyu_core.catalog import load_catalog
from kairyu_core.kube import KubeClient
from kairyu_provisioner.app import CONSUMED, Provisioner, consumer_spec
from kairyu_provisioner.backends import Backend
from kairyu_provisioner.backends.azure import AzureBackend
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
    async with DefaultAzureCredential() as credential:
        yield credential


async def serve(settings: ProvisionerSettings) -> None:
    catalog = load_catalog()
    async with (
        service.connections(settings) as (bus, kube),
        backend_for(settings, kube) as backend,
    ):
        await backend.prepare()
        provisioner = Provisioner(
            settings=settings, bus=bus, kube=kube, catalog=catalog, backend=backend
        )
        consumer = Consumer(
            bus,
            consumer_spec(settings, bus),
            service=settings.service_name,
            events=CONSUMED,
            handler=provisioner.handle,
        )
        await service.run_until_stopped(
            consumer=consumer,
            background=[provisioner.run_periodic()],
            grace_s=settings.shutdown_grace_s,
        )


def main() -> None:
    service.main(ProvisionerSettings, serve)


if __name__ == "__main__":
    main()
