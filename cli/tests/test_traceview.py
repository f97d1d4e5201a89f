"""The waterfall from Jaeger's JSON: phases merged per service, errors apart."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from kairyu_cli.traceview import render, rows, trace_id_of
from kairyu_core.rollout_trace import rollout_context

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def span(name: str, pid: str, start: float, duration: float, **tags: Any) -> dict[str, Any]:
    return {
        "traceID": TRACE,
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
                span("rollout ml/ws", "p2", 0, 0),
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
                span("node gpu-0", "p3", 2.5, 20.0),
                span("ready", "p1", 23.0, 0),
            ],
        }
    ]
}


def test_phases_are_merged_and_errors_kept_apart() -> None:
    table = rows(DOCUMENT)
    by_phase = [(r.phase, r.service, r.count, r.error) for r in table]
    assert by_phase == [
        ("rollout ml/ws", "planner", 1, False),
        ("plan", "planner", 2, False),
        ("provision", "provisioner", 1, True),
        ("node gpu-0", "provisioner", 1, False),
        ("provision", "provisioner", 1, False),
        ("ready", "deployer", 1, False),
    ]
    plan = table[1]
    assert (plan.start_s, round(plan.duration_s, 2)) == (0.2, 0.85)
    assert table[2].reason == "QuotaExceeded: no"
    text = render(table)
    assert "ERROR" in text
    assert "total 23.0s" in text


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
