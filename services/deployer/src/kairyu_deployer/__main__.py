"""`python -m kairyu_deployer`: deploy inference workloads until SIGTERM."""

from __future__ import annotations

from kairyu_contracts.catalog import load_catalog
from kairyu_core import service
from kairyu_core.bus import FOLLOWS
from kairyu_deployer.app import Deployer
from kairyu_deployer.settings import DeployerSettings


async def serve(settings: DeployerSettings) -> None:
    catalog = load_catalog()
    await service.serve_controller(
        settings,
        kinds=FOLLOWS["deployer"],
        reconcile=lambda bus, kube, view: (
            Deployer(settings=settings, kube=kube, view=view, catalog=catalog).reconcile
        ),
    )


def main() -> None:
    service.main(DeployerSettings, serve)


if __name__ == "__main__":
    main()
