"""`python -m kairyu_deployer`: deploy inference workloads until SIGTERM."""

from __future__ import annotations

from kairyu_core import service
from kairyu_core.catalog import load_catalog
from kairyu_deployer.app import CONSUMED, Deployer, consumer_spec
from kairyu_deployer.settings import DeployerSettings


async def serve(settings: DeployerSettings) -> None:
    await service.serve_consumer(
        settings,
        spec=lambda bus: consumer_spec(settings, bus),
        events=CONSUMED,
        handler=lambda bus, kube: (
            Deployer(settings=settings, bus=bus, kube=kube, catalog=load_catalog()).handle
        ),
    )


def main() -> None:
    service.main(DeployerSettings, serve)


if __name__ == "__main__":
    main()
