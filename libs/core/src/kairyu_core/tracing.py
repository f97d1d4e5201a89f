"""OpenTelemetry set-up for a service: a tracer provider named after it, and its exporters.

The exporters follow the standard variables: OTEL_TRACES_EXPORTER names them (`otlp`, `zipkin`,
both as `otlp,zipkin`, or `none`); each reads its own (OTEL_EXPORTER_OTLP_ENDPOINT and _HEADERS,
OTEL_EXPORTER_ZIPKIN_ENDPOINT). Without OTEL_TRACES_EXPORTER, an exporter whose endpoint is set
is on. Jaeger and Tempo take OTLP; Zipkin takes its own JSON (`make dev` feeds both: Jaeger for
`kairyu trace`, Zipkin for the browser). With none, spans are still made, so ids reach the logs
and the message headers. The global propagator stays W3C tracecontext + baggage.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
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
    for exporter in exporters(os.environ):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


class TracingConfigError(ValueError):
    """OTEL_TRACES_EXPORTER names an exporter kairyu does not ship."""


EXPORTERS = ("otlp", "zipkin")


def exporter_names(env: Mapping[str, str]) -> list[str]:
    """The exporters `env` asks for, in EXPORTERS' order."""
    if (chosen := env.get("OTEL_TRACES_EXPORTER")) is not None:
        names = {n.strip().lower() for n in chosen.split(",") if n.strip()}
        if unknown := names - {*EXPORTERS, "none"}:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER={chosen!r}: {', '.join(sorted(unknown))} is not one of "
                f"{', '.join(EXPORTERS)} or none"
            )
        return [] if "none" in names else [n for n in EXPORTERS if n in names]
    endpoints = {
        "otlp": ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        "zipkin": ("OTEL_EXPORTER_ZIPKIN_ENDPOINT",),
    }
    return [n for n in EXPORTERS if any(env.get(v) for v in endpoints[n])]


def exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    """One exporter per name; each reads its endpoint and options from the environment."""
    made: list[SpanExporter] = []
    for name in exporter_names(env):
        if name == "otlp":
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol != "http/protobuf":
                # Only the HTTP exporter is installed: spans sent as HTTP to a gRPC port would
                # be lost without a word.
                raise TracingConfigError(
                    f"OTLP protocol {protocol!r}: kairyu exports OTLP over HTTP only "
                    "(http/protobuf, usually port 4318)"
                )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

            made.append(OTLPSpanExporter())
        else:
            from opentelemetry.exporter.zipkin.json import ZipkinExporter  # noqa: PLC0415

            made.append(ZipkinExporter())
    return made
