"""`python -m kairyu_watcher`: run the watcher until SIGTERM / Ctrl-C."""

from __future__ import annotations

from kairyu_core import service
from kairyu_core.kube.leadership import lead
from kairyu_watcher.app import Watcher
from kairyu_watcher.settings import WatcherSettings


async def serve(settings: WatcherSettings) -> None:
    async with service.connections(settings) as (bus, kube):
        election = settings.leader_election

        async def watch() -> None:
            # A fresh Watcher per term: what an earlier term remembered may be stale now.
            await Watcher(settings=settings, bus=bus, kube=kube).run()

        work = lead(kube, election.lease(), watch) if election.enabled else watch()
        await service.run_until_stopped(background=[work], grace_s=settings.shutdown_grace_s)


def main() -> None:
    service.main(WatcherSettings, serve)


if __name__ == "__main__":
    main()
