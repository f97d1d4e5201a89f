"""`python -m kairyu_deployer`: deploy inference workloads until SIGTERM."""

from __future__ import annotations

from kairyu_core import service
from kairyu_core.bus import Consumer
from kairyu_core.catalog import load_catalog
from kairyu_deployer.app import CONSUMED, Deployer, consumer_spec
from kairyu_deployer.settings import DeployerSettings


async def serve(settings: DeployerSettings) -> None:
    async with service.connections(settings) as (bus, kube):
        deployer = Deployer(settings=settings, bus=bus, kube=kube, catalog=load_catalog())
        consumer = Consumer(
            bus,
            consumer_spec(settings, bus),
            service=settings.service_name,
            events=CONSUMED,
            handler=deployer.handle,
        )
        await service.run_until_stopped(consumer=consumer, grace_s=settings.shutdown_grace_s)


def main() -> None:
    service.main(DeployerSettings, serve)


if __name__ == "__main__":
    main()
