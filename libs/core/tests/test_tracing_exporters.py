"""Which span exporters a service turns on, from the standard OTEL_* variables."""

import pytest

from kairyu_core.tracing import TracingConfigError, exporter_names, exporters


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://zipkin:9411/api/v2/spans"}, ["zipkin"]),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318",
                "OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://zipkin:9411/api/v2/spans",
            },
            ["otlp", "zipkin"],
        ),
        # The chart's default when no endpoint is given; an endpoint alone does not override it.
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, []),
        ({"OTEL_TRACES_EXPORTER": " Zipkin , otlp "}, ["otlp", "zipkin"]),
        ({"OTEL_TRACES_EXPORTER": "zipkin", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, ["zipkin"]),
    ],
)
def test_exporters_follow_the_standard_variables(env: dict[str, str], expected: list[str]) -> None:
    assert exporter_names(env) == expected


def test_an_exporter_kairyu_does_not_ship_is_named_in_the_error() -> None:
    with pytest.raises(TracingConfigError, match="jaeger is not one of otlp, zipkin or none"):
        exporter_names({"OTEL_TRACES_EXPORTER": "otlp,jaeger"})


def test_the_zipkin_exporter_sends_to_the_configured_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_ZIPKIN_ENDPOINT", "http://zipkin.tracing:9411/api/v2/spans")
    [made] = exporters({"OTEL_TRACES_EXPORTER": "zipkin"})
    assert type(made).__name__ == "ZipkinExporter"
    assert made.endpoint == "http://zipkin.tracing:9411/api/v2/spans"  # type: ignore[attr-defined]


def test_otlp_over_grpc_is_refused_rather_than_sent_over_http_to_a_grpc_port() -> None:
    with pytest.raises(TracingConfigError, match="over HTTP only"):
        exporters(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        )
