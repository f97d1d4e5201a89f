"""`python -m kairyu_watcher`: run the watcher until SIGTERM / Ctrl-C."""

from __future__ import annotations

from kairyu_core import service
from kairyu_watcher.app import Watcher
from kairyu_watcher.settings import WatcherSettings


async def serve(settings: WatcherSettings) -> None:
    async with service.connections(settings) as (bus, kube):
        # A fresh Watcher per term of leadership: what an earlier term remembered may be stale.
        work = service.leading(
            settings, kube, lambda: [Watcher(settings=settings, bus=bus, kube=kube).run()]
        )
        await service.run_until_stopped(background=[work])


def main() -> None:
    service.main(WatcherSettings, serve)


if __name__ == "__main__":
    main()
