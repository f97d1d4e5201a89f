"""The waterfall from Jaeger's JSON: phases merged per service, errors apart."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from kairyu_cli.traceview import render, rows, trace_id_of
from kairyu_core.rollout_trace import rollout_context

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def span(
    name: str, pid: str, start: float, duration: float, *, parent: str | None = "root", **tags: Any
) -> dict[str, Any]:
    return {
        "traceID": TRACE,
        "spanID": "root" if name.startswith("rollout") else f"{name}-{start}",
        "references": [] if parent is None else [{"refType": "CHILD_OF", "spanID": parent}],
        "operationName": name,
        "processID": pid,
        "startTime": int(1_700_000_000_000_000 + start * 1e6),
        "duration": int(duration * 1e6),
        "tags": [{"key": k, "type": "string", "value": v} for k, v in tags.items()],
        "logs": [],
    }


DOCUMENT = {
    "data": [
        {
            "traceID": TRACE,
            "processes": {
                "p1": {"serviceName": "kairyu-deployer"},
                "p2": {"serviceName": "kairyu-planner"},
                "p3": {"serviceName": "kairyu-provisioner"},
            },
            "spans": [
                # A node's span can start with the root: the root still comes first.
                span("node gpu-0", "p3", 0, 20.0),
                span("rollout ml/ws", "p2", 0, 0.9, parent=None),
                span("plan", "p2", 0.2, 0.05),
                span("plan", "p2", 1.0, 0.05),
                span(
                    "provision",
                    "p3",
                    2.0,
                    0.3,
                    **{"otel.status_code": "ERROR", "otel.status_description": "QuotaExceeded: no"},
                ),
                span("provision", "p3", 3.0, 0.1),
                span("provision", "p3", 3.05, 0.1),  # overlapping: counted once
                span("ready", "p1", 23.0, 0),
            ],
        }
    ]
}


def test_rows_start_with_the_root_and_follow_the_order_work_started() -> None:
    table = rows(DOCUMENT)
    assert [(r.phase, r.service, r.count, r.error) for r in table] == [
        ("rollout ml/ws", "planner", 1, False),
        ("node gpu-0", "provisioner", 1, False),
        ("plan", "planner", 2, False),
        ("provision", "provisioner", 1, True),
        ("provision", "provisioner", 2, False),
        ("ready", "deployer", 1, False),
    ]
    assert table[0].root
    assert not any(r.root for r in table[1:])
    assert table[3].reason == "QuotaExceeded: no"


def test_a_phase_shows_the_time_worked_in_it_not_first_start_to_last_end() -> None:
    by_phase = {(r.phase, r.error): r for r in rows(DOCUMENT)}
    plan = by_phase["plan", False]
    # Two 50 ms plans 0.8 s apart: 0.1 s of work, not 0.85 s.
    assert (plan.start_s, round(plan.busy_s, 3), round(plan.end_s, 3)) == (0.2, 0.1, 1.05)
    provision = by_phase["provision", False]
    assert round(provision.busy_s, 3) == 0.15  # 3.0-3.1 and 3.05-3.15 overlap
    text = render(rows(DOCUMENT))
    assert "ERROR" in text
    assert "total 23.0s" in text
    line = next(line for line in text.splitlines() if line.startswith("plan "))
    assert line.split()[3:6] == ["0.2s", "0.10s", "1.1s"]  # start, busy, until


def test_the_trace_id_is_the_one_every_service_derives_from_uid_and_generation() -> None:
    uid = "0b5e6c1a-2f49-4a4e-9f0e-6a3b1d2c3e4f"
    meta: dict[str, object] = {"uid": uid, "generation": 2}
    context = rollout_context(uid, 2)
    assert context is not None
    parent = trace.get_current_span(context).get_span_context()
    assert trace_id_of(meta) == f"{parent.trace_id:032x}"
    assert trace_id_of({**meta, "generation": 3}) != trace_id_of(meta)  # one trace per generation
    assert trace_id_of({"generation": 2}) is None
    assert trace_id_of({"uid": "x"}) is None
