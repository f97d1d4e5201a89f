"""Settings from the environment and JSON logs that carry trace ids."""

import io
import json
import logging

import pytest
from opentelemetry import trace
from pydantic import ValidationError

from kairyu_core import logging as kairyu_logging
from kairyu_core.settings import LogSettings, ServiceSettings


def test_nested_settings_come_from_kairyu_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIRYU_NATS__URL", "nats://nats.kairyu:4222")
    monkeypatch.setenv("KAIRYU_LOG__FORMAT", "text")
    monkeypatch.setenv("KAIRYU_KUBE__KUBECONFIG", "/tmp/kubeconfig")
    settings = ServiceSettings()
    assert settings.nats.url == "nats://nats.kairyu:4222"
    assert settings.log.format == "text"
    assert str(settings.kube.kubeconfig) == "/tmp/kubeconfig"


def test_a_bad_setting_is_refused_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIRYU_LOG__LEVEL", "LOUD")
    with pytest.raises(ValidationError, match=r"log\.level"):
        ServiceSettings()


def test_json_log_lines_carry_the_trace_id(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        kairyu_logging.configure(LogSettings(format="json"), service="planner")
        stream = io.StringIO()
        monkeypatch.setattr(root.handlers[0], "stream", stream)
        with trace.get_tracer("t").start_as_current_span("work") as span:
            logging.getLogger("kairyu.test").info("planned %s", "phi-3")
        line = json.loads(stream.getvalue().splitlines()[-1])
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    assert line["message"] == "planned phi-3"
    assert line["service"] == "planner"
    assert line["level"] == "INFO"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
