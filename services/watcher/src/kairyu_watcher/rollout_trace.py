"""One trace per Workspace generation, rooted in a span whose context is kept on the Workspace.

The watcher starts the root span when it first sees a generation and writes its W3C context into the
annotation `kairyu.io/rollout-trace` as `<generation>;<traceparent>`. Every later step of that
rollout, in any service and after any restart, parents its spans on it, so a node that took twenty
minutes still lands in the same trace.
"""

from __future__ import annotations

from opentelemetry import propagate, trace
from opentelemetry.context import Context

from kairyu_core.tracing import ROLLOUT_ANNOTATION, rollout_context, rollout_generation

ANNOTATION = ROLLOUT_ANNOTATION
stored_generation = rollout_generation
context_of = rollout_context
_tracer = trace.get_tracer("kairyu_watcher")


def start_rollout(*, namespace: str, name: str, generation: int, uid: str) -> str:
    """Record the root span of a new generation's rollout; return the annotation value."""
    span = _tracer.start_span(
        f"rollout {namespace}/{name}",
        context=Context(),  # a root: not a child of whatever event led here
        attributes={
            "kairyu.workspace.namespace": namespace,
            "kairyu.workspace.name": name,
            "kairyu.workspace.uid": uid,
            "kairyu.workspace.generation": generation,
        },
    )
    # The root marks the start; it ends at once so it is exported even if this process dies.
    span.end()
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return f"{generation};{carrier['traceparent']}"


def record_outcome(*, key: str, generation: int, state: str, ready: bool) -> None:
    """Mark in the current rollout trace the moment the Workspace reached its end state."""
    span = _tracer.start_span(
        "ready" if ready else "failed",
        attributes={
            "kairyu.workspace": key,
            "kairyu.generation": generation,
            "kairyu.workspace.state": state,
        },
    )
    if not ready:
        span.set_status(trace.StatusCode.ERROR, f"state {state}")
    span.end()
