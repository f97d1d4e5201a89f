"""One trace per Workspace generation, whose ids every service derives from the uid and generation.

A rollout crosses five processes, restarts and minutes of waiting for nodes; its spans must still
land in one trace. The trace id and the root span's id are a hash of the Workspace's uid and
generation, so any service, at any time, parents its spans on the same root without reading or
writing anything: no annotation to write (one API request per generation saved) and nothing for
the planner to wait for. The planner records the root span when it first plans a generation; the
service whose status write turns `WorkspaceReady` True (or the Workspace Failed) records the
outcome beneath it. `kairyu trace` computes the same id to find the trace in Jaeger.

Whether a rollout is sampled is decided once for its trace id by the configured sampler (the
standard OTEL_TRACES_SAMPLER variables), so every service makes the same decision.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from kairyu_core import metrics
from kairyu_core.tracing import FORCED_IDS

_tracer = trace.get_tracer("kairyu.rollout")


def rollout_ids(uid: str, generation: int) -> tuple[int, int]:
    """(trace id, root span id) of the rollout of `generation` of the Workspace `uid`."""
    digest = hashlib.sha256(f"kairyu-rollout/{uid}/{generation}".encode()).digest()
    # Zero is the invalid id in W3C trace context; a hash gives it with probability 2^-64.
    return int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1


def trace_id_hex(uid: str, generation: int) -> str:
    """The rollout's trace id as Jaeger and the W3C traceparent spell it (32 hex digits)."""
    return f"{rollout_ids(uid, generation)[0]:032x}"


def _sampled(trace_id: int) -> bool:
    sampler = getattr(trace.get_tracer_provider(), "sampler", None)
    if sampler is None:
        return True
    return bool(sampler.should_sample(None, trace_id, "rollout").decision.is_sampled())


def rollout_context(uid: str | None, generation: int | None) -> Context | None:
    """The context whose parent is the rollout's root span, or None without a uid/generation."""
    if not uid or not generation:
        return None
    trace_id, span_id = rollout_ids(uid, generation)
    flags = TraceFlags(TraceFlags.SAMPLED if _sampled(trace_id) else TraceFlags.DEFAULT)
    root = SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(root))


def start_rollout(
    *,
    namespace: str,
    name: str,
    uid: str,
    generation: int,
    started: datetime | None,
    kind: str = "Workspace",
) -> None:
    """Record the root span of a generation's rollout, from `started` (or now) to now.

    `kind`: a Workspace's, or an InferenceSet's (a scale step, kairyu_planner.scalesteps).

    It ends at once, so it is exported even if this process dies; the rollout's other spans hang
    beneath it by its derived id. The planner records it once per process; a planner that
    restarts before its plan is written records it again (Jaeger flags a duplicate span id).
    """
    trace_id, span_id = rollout_ids(uid, generation)
    if not _sampled(trace_id):
        return
    token = FORCED_IDS.set((trace_id, span_id))
    try:
        prefix = f"kairyu.{kind.lower()}"
        span = _tracer.start_span(
            f"rollout {namespace}/{name}"
            if kind == "Workspace"
            else f"rollout {kind} {namespace}/{name}",
            context=Context(),  # a root: not a child of whatever change led here
            start_time=int(started.timestamp() * 1e9) if started is not None else None,
            attributes={
                f"{prefix}.namespace": namespace,
                f"{prefix}.name": name,
                f"{prefix}.uid": uid,
                f"{prefix}.generation": generation,
            },
        )
    finally:
        FORCED_IDS.reset(token)
    span.end()


def record_outcome(
    *, namespace: str, name: str, uid: str, generation: int, state: str, ready: bool
) -> None:
    """Mark in the rollout's trace the moment the Workspace reached its end state."""
    span = _tracer.start_span(
        "ready" if ready else "failed",
        context=rollout_context(uid, generation),
        attributes={
            "kairyu.workspace": f"{namespace}/{name}",
            "kairyu.generation": generation,
            "kairyu.workspace.state": state,
        },
    )
    if not ready:
        span.set_status(trace.StatusCode.ERROR, f"state {state}")
    span.end()


def observe_phases(durations: dict[str, float]) -> None:
    """Add a finished rollout's phase durations (kairyu_contracts.api.summary) to the histogram."""
    for phase, seconds in durations.items():
        metrics.ROLLOUT_PHASE_SECONDS.labels(phase).observe(seconds)
