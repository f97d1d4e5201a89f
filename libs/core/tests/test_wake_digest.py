"""Which Workspace changes wake the services: the digest of what some service decides on."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kairyu_contracts.objectstate import trim
from kairyu_core.informing import wake_digest
from kairyu_testing import seeds

JSON = dict[str, Any]


def condition(kind: str, status: str, reason: str, message: str = "", at: str = "T1") -> JSON:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": at,
        "observedGeneration": 1,
    }


def provisioning() -> JSON:
    doc = seeds.seed("inference")
    doc["metadata"].update(uid="u1", generation=1, resourceVersion="10", finalizers=["f"])
    doc["status"] = {
        "conditions": [
            condition("Planned", "True", "PlanCreated", "1 x Standard_NC6s_v3"),
            condition("ResourceReady", "Unknown", "Provisioning", "0 of 1 nodes ready"),
            condition("WorkspaceReady", "False", "Provisioning", "ResourceReady: 0 of 1"),
        ],
        "state": "Pending",
    }
    return doc


def changed(edit: Any) -> JSON:
    doc = copy.deepcopy(provisioning())
    doc["metadata"]["resourceVersion"] = "11"
    edit(doc)
    return doc


def conditions_of(doc: JSON) -> dict[str, JSON]:
    return {c["type"]: c for c in doc["status"]["conditions"]}


QUIET = {
    "the watcher's summary": lambda d: conditions_of(d)["WorkspaceReady"].update(
        reason="Pending", message="waiting for InferenceReady", lastTransitionTime="T2"
    ),
    "the state": lambda d: d["status"].update(state="NotReady"),
    "a progress message": lambda d: conditions_of(d)["ResourceReady"].update(
        message="0 of 1 nodes ready (node-a)"
    ),
    "managedFields": lambda d: d["metadata"].update(managedFields=[{"manager": "x"}]),
}
NEWS = {
    "a condition's status": lambda d: conditions_of(d)["ResourceReady"].update(
        status="True", reason="NodesReady"
    ),
    "a condition's reason": lambda d: conditions_of(d)["ResourceReady"].update(
        reason="NodeClaimNotReady"
    ),
    "a new condition": lambda d: d["status"]["conditions"].append(
        condition("InferenceReady", "False", "WorkspaceInferenceStatusPending")
    ),
    "the spec": lambda d: d["inference"]["preset"].update(name="phi-4"),
    "the generation": lambda d: d["metadata"].update(generation=2),
    "deletion": lambda d: d["metadata"].update(deletionTimestamp="2026-11-24T10:00:00Z"),
    "a finalizer": lambda d: d["metadata"].update(finalizers=[]),
    "a user's annotation": lambda d: (
        d["metadata"].setdefault("annotations", {}).update({"kaito.sh/runtime": "transformers"})
    ),
    "the worker nodes": lambda d: d["status"].update(workerNodes=["node-a"]),
    "a new Workspace of the same name": lambda d: d["metadata"].update(uid="u2"),
}


@pytest.mark.parametrize("edit", QUIET.values(), ids=QUIET.keys())
def test_a_change_no_service_decides_on_wakes_nobody(edit: Any) -> None:
    before = wake_digest("Workspace", trim("Workspace", provisioning()))
    assert wake_digest("Workspace", trim("Workspace", changed(edit))) == before


@pytest.mark.parametrize("edit", NEWS.values(), ids=NEWS.keys())
def test_a_change_some_service_decides_on_wakes_the_services(edit: Any) -> None:
    before = wake_digest("Workspace", trim("Workspace", provisioning()))
    assert wake_digest("Workspace", trim("Workspace", changed(edit))) != before


def node(ready: str = "True", heartbeat: str = "T1", version: str = "5") -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "n1",
            "uid": "n-uid",
            "resourceVersion": version,
            "labels": {"kaito.sh/workspace": "ws"},
        },
        "status": {
            "allocatable": {"nvidia.com/gpu": "1"},
            "conditions": [
                {"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat},
            ],
        },
    }


def test_a_node_heartbeat_wakes_nobody_but_its_readiness_and_gpus_do() -> None:
    def digest(value: JSON) -> str:
        return wake_digest("Node", trim("Node", value))

    base = digest(node())
    assert digest(node(heartbeat="T2", version="6")) == base
    assert digest(node(ready="False", heartbeat="T2", version="6")) != base
    gone = node(version="7")
    gone["status"]["allocatable"] = {}
    assert digest(gone) != base


def claim(message: str, *, reason: str = "Launching", status: str = "Unknown") -> JSON:
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {"name": "c1", "uid": "c-uid", "resourceVersion": message},
        "status": {
            "conditions": [
                {
                    "type": "Launched",
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": message,
                }
            ]
        },
    }


def test_a_claims_condition_message_wakes_nobody_but_its_status_and_reason_do() -> None:
    """Karpenter rewrites a launching claim's messages several times; the provisioner acts on a
    condition's status and reason (and reads the latest message from its view when it does)."""

    def digest(value: JSON) -> str:
        return wake_digest("NodeClaim", trim("NodeClaim", value))

    base = digest(claim("creating instance"))
    assert digest(claim("waiting for instance")) == base
    assert digest(claim("launched", status="True", reason="Launched")) != base
    refused = claim("quota exceeded", status="False", reason="LaunchFailed")
    assert digest(refused) != base
