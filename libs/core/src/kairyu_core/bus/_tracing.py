"""W3C trace context in NATS headers: inject on publish, extract on consume.

Tracing must never break a delivery, so the propagation helpers swallow and log their own errors.
"""

from __future__ import annotations

import logging

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context

log = logging.getLogger(__name__)
tracer = trace.get_tracer("kairyu_core.bus")


def inject(headers: dict[str, str]) -> None:
    """Write the current trace context (traceparent, tracestate, baggage) into `headers`."""
    try:
        propagate.inject(headers)
    except Exception:
        log.exception("could not inject trace context")


def extract(headers: dict[str, str] | None) -> Context:
    """The producer's context from message headers, or the empty context."""
    try:
        return propagate.extract(headers or {})
    except Exception:
        log.exception("could not extract trace context")
        return context.Context()
