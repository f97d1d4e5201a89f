"""Logging set-up: JSON lines with trace ids in the cluster, plain text on a terminal."""

from __future__ import annotations

import logging
import sys

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from kairyu_core.settings import LogSettings


class _TraceIds(logging.Filter):
    """Adds the current trace_id / span_id so a log line can be found from its trace and back."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else ""
        record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else ""
        return True


def configure(settings: LogSettings, *, service: str) -> None:
    """Replace the root handlers with one stderr handler in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_TraceIds())
    if settings.format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(trace_id)s %(span_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                static_fields={"service": service},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
