"""Retrying a call for ever, with a capped exponential backoff: tenacity, set up once.

A service that starts before NATS or the apiserver can be reached waits for them instead of
exiting (a restarted container would find neither any better), and says in its log what it waits
for. Each of those waits is `await retry_forever(what, on=...)(call, *args)`. Only the exceptions
named in `on` are retried; anything else, and a cancellation, ends the wait at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

log = logging.getLogger(__name__)


def retry_forever(
    what: str,
    *,
    on: type[Exception] | tuple[type[Exception], ...],
    first_s: float = 0.5,
    max_s: float = 30.0,
    before_sleep: Callable[[], None] | None = None,
) -> AsyncRetrying:
    """A retrier of `on` for ever, waiting `first_s`, doubling up to `max_s`; each wait is logged.

    `before_sleep` runs before each wait too (a readiness flag to clear, for one).
    """

    def _log(state: RetryCallState) -> None:
        if before_sleep is not None:
            before_sleep()
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s failed (%s: %s); retrying in %.1fs", what, type(error).__name__, error, delay
        )

    return AsyncRetrying(
        retry=retry_if_exception_type(on),
        wait=wait_exponential(multiplier=first_s, min=first_s, max=max_s),
        before_sleep=_log,
        reraise=True,
    )
