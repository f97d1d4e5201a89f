"""Services in the test's event loop: their consumers and background tasks, stopped in order.

Tests wire the services they need (core does not import services); this only runs them and
shuts them down the way a service's `__main__` would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from kairyu_core.bus import Bus, Consumer, ConsumerSpec, Handler
from kairyu_core.events import Event
from kairyu_core.objectstate import Kind
from kairyu_core.reconciling import Reconcile
from kairyu_core.service import Controlled
from kairyu_core.view import View


class ServiceStack:
    """Consumers and tasks of in-process services on one bus."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._consumers: list[Consumer] = []
        self._tasks: list[asyncio.Task[Any]] = []

    def consume(
        self,
        spec: ConsumerSpec,
        *,
        service: str,
        events: Mapping[str, type[Event]],
        handler: Handler,
    ) -> Consumer:
        consumer = Consumer(self.bus, spec, service=service, events=events, handler=handler)
        self._consumers.append(consumer)
        self.run(consumer.run())
        return consumer

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
        consumers, tasks = self._consumers, self._tasks
        self._consumers, self._tasks = [], []
        for consumer in consumers:
            await consumer.stop(grace_s=1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
