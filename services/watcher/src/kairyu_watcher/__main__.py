"""`python -m kairyu_watcher`: run the watcher until SIGTERM / Ctrl-C."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from kairyu_core import service
from kairyu_core.kube.leadership import Lease, lead
from kairyu_watcher.app import Watcher
from kairyu_watcher.settings import WatcherSettings


async def serve(settings: WatcherSettings) -> None:
    async with service.connections(settings) as (bus, kube):
        election = settings.leader_election

        async def watch() -> None:
            # A fresh Watcher per term: what an earlier term remembered may be stale now.
            await Watcher(settings=settings, bus=bus, kube=kube).run()

        work: Coroutine[Any, Any, None]
        if not election.enabled:
            work = watch()
        else:
            lease = Lease(
                name=election.lease_name,
                namespace=election.namespace,
                identity=election.identity,
                duration_s=election.duration_s,
                renew_deadline_s=election.renew_deadline_s,
                retry_s=election.retry_s,
            )
            work = lead(kube, lease, watch)
        await service.run_until_stopped(background=[work], grace_s=settings.shutdown_grace_s)


def main() -> None:
    service.main(WatcherSettings, serve)


if __name__ == "__main__":
    main()
