"""The planner's reconcile against a view built from dicts: what it writes, and what it reads.

No cluster and no NATS: the view holds trimmed Workspaces as the informer would, and a
RecordingKube records every request and refuses reads, so a GET on the hot path fails the test.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kairyu_contracts.catalog import load_catalog
from kairyu_contracts.objectstate import ObjectKey, trim
from kairyu_core.bus import FOLLOWS
from kairyu_core.rollout_trace import rollout_ids
from kairyu_core.view import View
from kairyu_planner import app
from kairyu_planner.app import Planner
from kairyu_planner.settings import PlannerSettings
from kairyu_testing.recording import RecordingKube
from kairyu_testing.seeds import seed

NS, NAME, UID = "ml", "auto", "ws-uid"
KEY = f"{NS}/{NAME}"


def workspace(*, generation: int = 1, version: str = "1") -> dict[str, Any]:
    """A Workspace of phi-3 without an instance type, as the watcher publishes it."""
    doc = seed("inference")
    del doc["resource"]["instanceType"]
    doc["metadata"] = {
        "name": NAME,
        "namespace": NS,
        "uid": UID,
        "generation": generation,
        "resourceVersion": version,
    }
    return doc


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def view_of(*objects: dict[str, Any]) -> View:
    view = View(FOLLOWS["planner"])
    for obj in objects:
        view.apply(ObjectKey.of("Workspace", obj), trim("Workspace", obj))
    return view


def planner(view: View, kube: RecordingKube) -> Planner:
    return Planner(settings=PlannerSettings(), kube=kube, view=view, catalog=load_catalog())


def applied(kube: RecordingKube) -> list[dict[str, Any]]:
    """The status bodies applied, in order."""
    return [c.body["status"] for c in kube.writes_to("/status", "PATCH")]


def with_status(obj: dict[str, Any], status: dict[str, Any], version: str) -> dict[str, Any]:
    """`obj` as the watcher publishes it after `status` was applied (the planner's own fields)."""
    out = copy.deepcopy(obj)
    out["metadata"]["resourceVersion"] = version
    out.setdefault("status", {}).update(status)
    return out


async def planned_once(kube: RecordingKube) -> tuple[View, dict[str, Any]]:
    """Plan the Workspace once; return the view (updated as the watcher would) and the status."""
    view = view_of(workspace())
    assert await planner(view, kube).reconcile(KEY) is None
    (status,) = applied(kube)
    obj = with_status(workspace(), status, "2")
    view.apply(ObjectKey.of("Workspace", obj), trim("Workspace", obj))
    return view, obj


async def test_a_plan_is_written_once_without_reading_the_apiserver() -> None:
    kube = RecordingKube()  # any GET or LIST fails the test
    view, _ = await planned_once(kube)
    status = applied(kube)[0]
    plan = status["plan"]
    assert plan["instanceType"] == "Standard_NC4as_T4_v3"
    assert len(plan["digest"]) == 16
    assert status["targetNodeCount"] == 1
    condition = conditions(status)["Planned"]
    assert (condition["status"], condition["reason"]) == ("True", "PlanCreated")
    assert condition["observedGeneration"] == 1
    # The same write carries the summary it leads to: no second write for WorkspaceReady.
    ready = conditions(status)["WorkspaceReady"]
    assert (ready["status"], ready["message"]) == ("False", "waiting for ResourceReady")
    assert status["state"] == "Pending"
    # The view now shows the plan: a second reconcile (any change of the Workspace) writes nothing.
    await Planner(
        settings=PlannerSettings(), kube=kube, view=view, catalog=load_catalog()
    ).reconcile(KEY)
    assert len(kube.writes) == 1
    assert not [c for c in kube.calls if c.method == "GET"]


async def test_gone_or_deleting_workspaces_are_not_planned() -> None:
    kube = RecordingKube()
    deleting = workspace()
    deleting["metadata"]["deletionTimestamp"] = "2026-11-30T00:00:00Z"
    assert await planner(view_of(), kube).reconcile(KEY) is None
    assert await planner(view_of(deleting), kube).reconcile(KEY) is None
    assert kube.calls == []


async def test_a_new_generation_is_planned_at_once_under_its_derived_rollout_trace(
    spans: InMemorySpanExporter,
) -> None:
    """No annotation to wait for: the root span's ids come from the uid and generation."""
    kube = RecordingKube()
    assert await planner(view_of(workspace(generation=3)), kube).reconcile(KEY) is None
    assert len(kube.writes) == 1  # the plan; nothing written to the Workspace's metadata
    trace_id, root_id = rollout_ids(UID, 3)
    finished = spans.get_finished_spans()
    (root,) = [s for s in finished if s.name == f"rollout {KEY}"]
    assert (root.context.trace_id, root.context.span_id) == (trace_id, root_id)
    (plan,) = [s for s in finished if s.name == "plan"]
    assert plan.context.trace_id == trace_id
    assert plan.parent is not None
    assert plan.parent.span_id == root_id


async def test_a_replan_request_for_the_current_plan_excludes_its_sku() -> None:
    kube = RecordingKube()
    view, obj = await planned_once(kube)
    first = obj["status"]["plan"]
    request = {
        "planDigest": first["digest"],
        "instanceType": first["instanceType"],
        "reason": "QuotaExceeded for Standard_NC4as_T4_v3:\nexceeding approved quota" + "y" * 900,
    }
    asked = with_status(obj, {"replanRequest": request}, "3")
    view.apply(ObjectKey.of("Workspace", asked), trim("Workspace", asked))
    await planner(view, kube).reconcile(KEY)
    status = applied(kube)[-1]
    plan = status["plan"]
    assert plan["instanceType"] == "Standard_NC8as_T4_v3"
    assert plan["excludedInstanceTypes"] == ["Standard_NC4as_T4_v3"]
    assert plan["digest"] != first["digest"]  # the request is stale by construction
    assert len(plan["replanReason"]) <= app.MAX_REPLAN_REASON
    assert "\n" not in plan["replanReason"]
    assert conditions(status)["Planned"]["message"].startswith("re-planned after: QuotaExceeded")
    # The view shows the new plan beside the old request: nothing more is written.
    replanned = with_status(asked, status, "4")
    view.apply(ObjectKey.of("Workspace", replanned), trim("Workspace", replanned))
    writes = len(kube.writes)
    await planner(view, kube).reconcile(KEY)
    assert len(kube.writes) == writes


@pytest.mark.parametrize(
    ("digest", "sku"),
    [
        ("0123456789abcdef", "Standard_NC4as_T4_v3"),  # about an earlier plan
        (None, "Standard_NC6s_v3"),  # the current plan, but not its SKU
        (None, "Made_Up_SKU"),  # no SKU kairyu knows
    ],
)
async def test_a_replan_request_not_about_the_current_plan_is_ignored(
    digest: str | None, sku: str
) -> None:
    kube = RecordingKube()
    view, obj = await planned_once(kube)
    request = {
        "planDigest": digest or obj["status"]["plan"]["digest"],
        "instanceType": sku,
        "reason": "QuotaExceeded",
    }
    asked = with_status(obj, {"replanRequest": request}, "3")
    view.apply(ObjectKey.of("Workspace", asked), trim("Workspace", asked))
    await planner(view, kube).reconcile(KEY)
    assert len(kube.writes) == 1  # only the first plan


async def test_a_refused_sku_with_nothing_else_that_fits_keeps_the_plan_and_says_so() -> None:
    kube = RecordingKube()
    settings = PlannerSettings(planning={"allowed_skus": ["Standard_NC4as_T4_v3"]})
    view = view_of(workspace())
    await Planner(settings=settings, kube=kube, view=view, catalog=load_catalog()).reconcile(KEY)
    obj = with_status(workspace(), applied(kube)[0], "2")
    first = obj["status"]["plan"]
    request = {"planDigest": first["digest"], "instanceType": first["instanceType"], "reason": "Q"}
    asked = with_status(obj, {"replanRequest": request}, "3")
    view.apply(ObjectKey.of("Workspace", asked), trim("Workspace", asked))
    await Planner(settings=settings, kube=kube, view=view, catalog=load_catalog()).reconcile(KEY)
    status = applied(kube)[-1]
    # Dropping the plan would forget the refused SKUs and plan it again, over and over.
    assert status["plan"]["digest"] == first["digest"]
    assert "no other SKU fits" in conditions(status)["Planned"]["message"]
    again = with_status(asked, status, "4")
    view.apply(ObjectKey.of("Workspace", again), trim("Workspace", again))
    writes = len(kube.writes)
    await Planner(settings=settings, kube=kube, view=view, catalog=load_catalog()).reconcile(KEY)
    assert len(kube.writes) == writes


async def test_a_refusal_keeps_the_last_plan_for_what_still_runs() -> None:
    """Planned=False for a new generation leaves the earlier generation's plan in the status."""
    kube = RecordingKube()
    first = workspace(generation=1)
    await planner(view_of(first), kube).reconcile(KEY)
    (write,) = kube.writes_to("/status")
    planned = write.body["status"]["plan"]
    edited = workspace(generation=2)
    edited["status"] = {"plan": planned, "conditions": write.body["status"]["conditions"]}
    edited["inference"]["preset"]["name"] = "no-such-model"
    kube = RecordingKube()
    await planner(view_of(edited), kube).reconcile(KEY)
    (refusal,) = kube.writes_to("/status")
    condition = next(c for c in refusal.body["status"]["conditions"] if c["type"] == "Planned")
    assert (condition["status"], condition["observedGeneration"]) == ("False", 2)
    assert refusal.body["status"]["plan"] == planned  # still the plan of generation 1
