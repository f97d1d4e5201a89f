"""Services in the test's event loop: views, controllers and background tasks, stopped together.

Tests wire the services they need (core does not import services); this only runs them and
shuts them down the way a service's `__main__` would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from kairyu_contracts.objectstate import Kind
from kairyu_core.bus import Bus
from kairyu_core.reconciling import Reconcile
from kairyu_core.service import Controlled
from kairyu_core.view import View


class ServiceStack:
    """Tasks of in-process services on one bus."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._tasks: list[asyncio.Task[Any]] = []

    def control(
        self,
        *,
        service: str,
        kinds: tuple[Kind, ...],
        reconcile: Callable[[View], Reconcile],
        workers: int = 8,
    ) -> Controlled:
        """A service's view, informer and controller, running until `stop`."""
        controlled = Controlled(
            self.bus, service=service, kinds=kinds, reconcile=reconcile, workers=workers
        )
        for work in controlled.work():
            self.run(work)
        return controlled

    def run(self, work: Coroutine[Any, Any, Any]) -> None:
        self._tasks.append(asyncio.create_task(work))

    async def stop(self) -> None:
        """Stop everything started so far (again harmless: it is then already stopped)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
