"""One reconcile per Workspace key, controller-runtime style: a coalescing work queue and workers.

Every change a service learns of enqueues the key of the Workspace it concerns. While a key waits,
further triggers merge into it (one reconcile for a burst of changes); a key is never reconciled
twice at once (a trigger that comes while it runs makes it run once more afterwards); failures
back off per key; and `reconcile` returns when it wants to look again (`requeue_after`, for
timeouts and polls of things no event announces), which replaces periodic scans of everything.

A reconcile that keeps failing is not retried for ever in a tight loop nor dropped silently:
`TemporaryError` (an outage, a conflict) is retried at its delay, growing while it lasts; a
`PermanentError` or an unexpected exception that repeats `give_up_after` times is handed to
`on_give_up` (the service dead-letters it: a record on the bus and a log line) and the key waits
for its next change. A new change of the key resets its failures.

No I/O here: the controller is tested with plain coroutines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from kairyu_core import metrics
from kairyu_core.bus import PermanentError, TemporaryError

log = logging.getLogger(__name__)

Reconcile = Callable[[str], Awaitable[float | None]]
"""`reconcile(key)`: do what the key needs; return seconds after which to look again, or None."""
GiveUp = Callable[[str, str, BaseException], Awaitable[None]]
"""`on_give_up(key, reason, error)`: record a reconcile that stopped being retried."""

_BACKOFF_BASE_S = 0.5
_BACKOFF_MAX_S = 60.0


class WorkQueue:
    """Keys waiting to be reconciled: deduplicated, never handed out twice at once.

    `add` puts a key in line unless it already waits; a key added while it is being processed is
    marked dirty and handed out again when `done` is called for it. `add_after` schedules an add.
    """

    def __init__(self) -> None:
        self._order: asyncio.Queue[str] = asyncio.Queue()
        self._waiting: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._closed = False

    def add(self, key: str) -> None:
        if self._closed:
            return
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._waiting:
            return
        self._waiting.add(key)
        self._order.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        """Add `key` after `delay` seconds; an earlier scheduled add of the key wins."""
        if self._closed:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None:
            if timer.when() <= due:
                return
            timer.cancel()
        self._timers[key] = loop.call_at(due, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> str:
        """The next key to process; it is then processing until `done(key)`."""
        key = await self._order.get()
        self._waiting.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        """Processing of `key` ended; if it was triggered meanwhile, it goes back in line."""
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def close(self) -> None:
        """Accept nothing more and drop the scheduled adds."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def __len__(self) -> int:
        """Keys waiting now (not those being processed or scheduled)."""
        return len(self._waiting)


@dataclass
class _Failures:
    count: int = 0
    first_at: float = 0.0


class Controller:
    """Runs `reconcile(key)` for each key in its queue, with `workers` keys at once."""

    def __init__(
        self,
        name: str,
        reconcile: Reconcile,
        *,
        workers: int = 8,
        give_up_after: int = 10,
        on_give_up: GiveUp | None = None,
        backoff_base_s: float = _BACKOFF_BASE_S,
        backoff_max_s: float = _BACKOFF_MAX_S,
    ) -> None:
        self.name = name
        self.queue = WorkQueue()
        self._reconcile = reconcile
        self._workers = workers
        self._give_up_after = give_up_after
        self._on_give_up = on_give_up
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._failures: dict[str, _Failures] = {}
        self._stopping = False
        self.reconciles = 0
        """Reconciles run so far (all outcomes): tests and the benchmark read it."""

    def enqueue(self, keys: Iterable[str] | str) -> None:
        """Trigger the keys: a change concerns them. Resets their failure backoff."""
        for key in [keys] if isinstance(keys, str) else keys:
            self._failures.pop(key, None)
            self.queue.add(key)

    async def run(self, *, ready: Awaitable[object] | None = None) -> None:
        """Work until cancelled; with `ready`, only once it is done (the view is synced)."""
        if ready is not None:
            await ready
        workers = [asyncio.create_task(self._work()) for _ in range(self._workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            self.queue.close()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self._one(key)
            finally:
                self.queue.done(key)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A library call in the reconcile swallowed the cancellation (asyncio.wait_for
                # on Python 3.11 can): stop anyway, or the controller's shutdown would wait for
                # ever on this worker.
                raise asyncio.CancelledError

    async def _one(self, key: str) -> None:
        started = time.monotonic()
        outcome = "ok"
        try:
            again = await self._reconcile(key)
        except asyncio.CancelledError:
            raise
        except TemporaryError as exc:
            outcome = "retried"
            delay = max(exc.delay, self._backoff(key))
            log.info("%s: %s not done, again in %.1fs: %s", self.name, key, delay, exc)
            self.queue.add_after(key, delay)
        except PermanentError as exc:
            outcome = "gave_up"
            await self._give_up(key, exc.reason, exc)
        except Exception as exc:  # a bug or odd data: retry with backoff, then give up
            failures = self._failures.setdefault(key, _Failures(first_at=started))
            failures.count += 1
            if failures.count >= self._give_up_after:
                outcome = "gave_up"
                log.exception("%s: reconcile of %s failed %d times", self.name, key, failures.count)
                await self._give_up(key, "ReconcileFailed", exc)
            else:
                outcome = "retried"
                delay = self._backoff(key, count=failures.count)
                log.warning(
                    "%s: reconcile of %s failed (%r), again in %.1fs", self.name, key, exc, delay
                )
                self.queue.add_after(key, delay)
        else:
            self._failures.pop(key, None)
            if again is not None:
                self.queue.add_after(key, again)
        finally:
            self.reconciles += 1
            metrics.RECONCILES.labels(self.name, outcome).inc()
            metrics.RECONCILE_SECONDS.labels(self.name).observe(time.monotonic() - started)

    def _backoff(self, key: str, *, count: int | None = None) -> float:
        if count is None:
            failures = self._failures.setdefault(key, _Failures(first_at=time.monotonic()))
            failures.count += 1
            count = failures.count
        return float(min(self._backoff_max_s, self._backoff_base_s * 2 ** (count - 1)))

    async def _give_up(self, key: str, reason: str, exc: BaseException) -> None:
        self._failures.pop(key, None)
        if self._on_give_up is None:
            log.error("%s: gave up on %s (%s): %s", self.name, key, reason, exc)
            return
        with contextlib.suppress(Exception):
            await self._on_give_up(key, reason, exc)
