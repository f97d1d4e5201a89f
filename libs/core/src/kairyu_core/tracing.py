"""OpenTelemetry set-up for a service: a tracer provider named after it, OTLP export if configured.

The exporter follows the standard variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER,
OTEL_EXPORTER_OTLP_HEADERS, ...); with no endpoint set, spans are made (so ids reach the logs
and the message headers) but not exported. The global propagator stays W3C tracecontext + baggage.
"""

from __future__ import annotations

import os
from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

FORCED_IDS: ContextVar[tuple[int, int] | None] = ContextVar("kairyu_forced_ids", default=None)
"""(trace id, span id) the next span started in this context gets, instead of random ones.

Set only around the start of a rollout's root span (kairyu_core.rollout_trace), whose ids every
service derives from the Workspace's uid and generation."""


class _Ids(RandomIdGenerator):
    """Random ids, except for a span started while FORCED_IDS is set."""

    def generate_span_id(self) -> int:
        forced = FORCED_IDS.get()
        return forced[1] if forced is not None else super().generate_span_id()

    def generate_trace_id(self) -> int:
        forced = FORCED_IDS.get()
        return forced[0] if forced is not None else super().generate_trace_id()


def configure(service: str, *, processors: list[SpanProcessor] | None = None) -> TracerProvider:
    """Install and return the global tracer provider for `service`."""
    provider = TracerProvider(
        id_generator=_Ids(),
        resource=Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service)}),
    )
    for processor in processors or []:
        provider.add_span_processor(processor)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider
