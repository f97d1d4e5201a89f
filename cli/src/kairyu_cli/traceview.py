"""A rollout's trace as a waterfall, from Jaeger's query API (pure apart from `fetch`).

`kairyu trace <namespace>/<workspace>` derives the trace id from the Workspace's uid and
generation (kairyu_core.rollout_trace) and asks Jaeger for that trace; this module turns Jaeger's
JSON into rows (phase, service, start, time worked, last end, status, reason) and prints them,
so "why was this rollout slow, where did it fail" is one command.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

from kairyu_core.rollout_trace import trace_id_hex


@dataclass(frozen=True)
class Row:
    """One phase of one service: when it first worked on it, how long, and until when."""

    phase: str
    service: str
    start_s: float
    """The first span's start, from the rollout's first span."""
    busy_s: float
    """Time the service was working in this phase: the union of its spans, gaps left out."""
    end_s: float
    """The last span's end, from the rollout's first span."""
    error: bool
    reason: str
    count: int = 1
    root: bool = False
    """The rollout's own span, which every other span descends from."""


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
    """The trace's phases in the order they started, the rollout's root first.

    A service handles many events per rollout, each in a span of its own; spans of one phase by
    one service are one row with their count and their latest reason, so the waterfall shows
    phases rather than events. A row's `busy_s` is the time its spans cover, not first start to
    last end: a planner that planned in 40 ms and looked again 2 s later was busy for 80 ms, and
    the gap is time spent waiting for others, which their rows show. Errors stay apart.
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
    ids = {s.get("spanID") for s in spans}
    merged: dict[tuple[str, str, bool], dict[str, Any]] = {}
    for span in spans:
        tags = {t["key"]: t.get("value") for t in span.get("tags") or []}
        error = tags.get("otel.status_code") == "ERROR" or tags.get("error") is True
        name = span["operationName"]
        service = processes.get(span.get("processID", ""), "?").removeprefix("kairyu-")
        start = span["startTime"]
        end = start + span.get("duration", 0)
        reason = str(tags.get("otel.status_description") or "") or _last_condition(span)
        parents = {r.get("spanID") for r in span.get("references") or []} & ids
        row = merged.setdefault(
            (name, service, error),
            {"intervals": [], "count": 0, "reason": "", "root": False},
        )
        row["intervals"].append((start, end))
        row["count"] += 1
        row["reason"] = reason or row["reason"]
        row["root"] = row["root"] or (not parents and name.startswith("rollout "))
    table = [
        Row(
            phase=name,
            service=service,
            start_s=(min(s for s, _ in row["intervals"]) - origin) / 1e6,
            busy_s=_covered(row["intervals"]) / 1e6,
            end_s=(max(e for _, e in row["intervals"]) - origin) / 1e6,
            error=error,
            reason=row["reason"],
            count=row["count"],
            root=row["root"],
        )
        for (name, service, error), row in merged.items()
    ]
    return sorted(table, key=lambda r: (not r.root, r.start_s, r.phase))


def _covered(intervals: list[tuple[int, int]]) -> int:
    """How much of the time line the intervals cover, overlaps counted once."""
    total, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return total


def _last_condition(span: dict[str, Any]) -> str:
    """The last condition transition the span recorded (its `condition` events), if any."""
    for log in reversed(span.get("logs") or []):
        fields = {f["key"]: f.get("value") for f in log.get("fields") or []}
        if fields.get("event") == "condition":
            return f"{fields.get('type')}={fields.get('status')} {fields.get('reason', '')}".strip()
    return ""


def render(table: list[Row]) -> str:
    """The rows as a table: each phase's start, the time worked in it, and its last end."""
    if not table:
        return "no spans in this trace (yet): is the exporter pointed at this Jaeger?"
    header = (
        f"{'phase':<34} {'service':<12} {'spans':>5} {'start':>8} {'busy':>8} {'until':>8}  "
        f"{'status':<6} reason"
    )
    lines = [header, "-" * len(header)]
    end = max(r.end_s for r in table)
    for r in table:
        lines.append(
            f"{r.phase[:34]:<34} {r.service[:12]:<12} {r.count:>5} {r.start_s:>7.1f}s "
            f"{r.busy_s:>7.2f}s {r.end_s:>7.1f}s"
            f"  {'ERROR' if r.error else 'ok':<6} {r.reason}"
        )
    lines.append(f"total {end:.1f}s")
    return "\n".join(lines)
