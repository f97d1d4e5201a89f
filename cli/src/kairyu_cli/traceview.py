"""A rollout's trace as a waterfall, from Jaeger's query API (pure apart from `fetch`).

`kairyu trace <namespace>/<workspace>` derives the trace id from the Workspace's uid and
generation (kairyu_core.rollout_trace) and asks Jaeger for that trace; this module turns Jaeger's
JSON into rows (phase, service, start, duration, status, reason) and prints them, so "why was
this rollout slow, where did it fail" is one command and not a UI.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

from kairyu_core.rollout_trace import trace_id_hex


@dataclass(frozen=True)
class Row:
    phase: str
    service: str
    start_s: float
    duration_s: float
    error: bool
    reason: str
    count: int = 1


def trace_id_of(metadata: dict[str, Any]) -> str | None:
    """The trace id of the rollout of the Workspace's current generation (from its metadata)."""
    uid, generation = metadata.get("uid"), metadata.get("generation")
    if not uid or not isinstance(generation, int) or generation < 1:
        return None
    return trace_id_hex(str(uid), generation)


def fetch(query_url: str, trace_id: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """Jaeger's HTTP query API (`/api/traces/<id>`), as JSON."""
    url = f"{query_url.rstrip('/')}/api/traces/{trace_id}"
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - a URL the user gave
        return dict(json.load(response))


def rows(document: dict[str, Any]) -> list[Row]:
    """The trace's phases, oldest first, with start offsets from the rollout's first span.

    A service handles many events per rollout, each in a span of its own; spans of one phase by
    one service are merged into a row from the first start to the last end, with their count and
    their latest reason, so the waterfall shows phases rather than events. Errors stay apart.
    """
    data = document.get("data") or []
    if not data:
        return []
    trace = data[0]
    processes = {
        pid: p.get("serviceName", "?") for pid, p in (trace.get("processes") or {}).items()
    }
    spans = sorted(trace.get("spans") or [], key=lambda s: (s["startTime"], s["operationName"]))
    if not spans:
        return []
    origin = spans[0]["startTime"]
    merged: dict[tuple[str, str, bool], dict[str, Any]] = {}
    for span in spans:
        tags = {t["key"]: t.get("value") for t in span.get("tags") or []}
        error = tags.get("otel.status_code") == "ERROR" or tags.get("error") is True
        name = span["operationName"]
        service = processes.get(span.get("processID", ""), "?").removeprefix("kairyu-")
        start = span["startTime"]
        end = start + span.get("duration", 0)
        reason = str(tags.get("otel.status_description") or "") or _last_condition(span)
        row = merged.setdefault(
            (name, service, error), {"start": start, "end": end, "count": 0, "reason": ""}
        )
        row["end"] = max(row["end"], end)
        row["count"] += 1
        row["reason"] = reason or row["reason"]
    return sorted(
        (
            Row(
                phase=name,
                service=service,
                start_s=(row["start"] - origin) / 1e6,
                duration_s=(row["end"] - row["start"]) / 1e6,
                error=error,
                reason=row["reason"],
                count=row["count"],
            )
            for (name, service, error), row in merged.items()
        ),
        key=lambda r: (r.start_s, r.phase),
    )


def _last_condition(span: dict[str, Any]) -> str:
    """The last condition transition the span recorded (its `condition` events), if any."""
    for log in reversed(span.get("logs") or []):
        fields = {f["key"]: f.get("value") for f in log.get("fields") or []}
        if fields.get("event") == "condition":
            return f"{fields.get('type')}={fields.get('status')} {fields.get('reason', '')}".strip()
    return ""


def render(table: list[Row]) -> str:
    if not table:
        return "no spans in this trace (yet): is the exporter pointed at this Jaeger?"
    header = (
        f"{'phase':<34} {'service':<12} {'spans':>5} {'start':>8} {'duration':>9}  "
        f"{'status':<6} reason"
    )
    lines = [header, "-" * len(header)]
    end = max(r.start_s + r.duration_s for r in table) or 1.0
    for r in table:
        lines.append(
            f"{r.phase[:34]:<34} {r.service[:12]:<12} {r.count:>5} {r.start_s:>7.1f}s "
            f"{r.duration_s:>8.2f}s"
            f"  {'ERROR' if r.error else 'ok':<6} {r.reason}"
        )
    lines.append(f"total {end:.1f}s")
    return "\n".join(lines)
