"""OpenTelemetry set-up for a service: a tracer provider named after it, OTLP export if configured.

The exporter follows the standard variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER,
OTEL_EXPORTER_OTLP_HEADERS, ...); with no endpoint set, spans are made (so ids reach the logs
and the message headers) but not exported. The global propagator stays W3C tracecontext + baggage.
"""

from __future__ import annotations

import os

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def configure(service: str, *, processors: list[SpanProcessor] | None = None) -> TracerProvider:
    """Install and return the global tracer provider for `service`."""
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service)})
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


ROLLOUT_ANNOTATION = "kairyu.io/rollout-trace"
"""On each Workspace: `<generation>;<traceparent>` of its current rollout's root span. The watcher
writes it; every service parents its spans on it, so one rollout is one trace (design.md)."""


def rollout_generation(annotations: dict[str, str] | None) -> int | None:
    """The generation whose trace the annotation holds, or None."""
    value = (annotations or {}).get(ROLLOUT_ANNOTATION, "")
    generation, _, _ = value.partition(";")
    return int(generation) if generation.isdigit() else None


def rollout_context(annotations: dict[str, str] | None) -> Context | None:
    """The rollout's trace context from the annotation, or None if there is none."""
    _, _, traceparent = (annotations or {}).get(ROLLOUT_ANNOTATION, "").partition(";")
    return propagate.extract({"traceparent": traceparent}) if traceparent else None
