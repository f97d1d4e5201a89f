"""A spare node for the update of a serving single-node Workspace, and its release (pure).

A Workspace served by one pod on one GPU node cannot roll a new pod out beside the old one: the
old pod holds the node's GPUs. So when such a Workspace gets a new plan (a preset, adapter,
config or runtime change) on the same SKU while its node was chosen for the previous plan, the
provisioner asks for one more node of that SKU
and reports both as `status.workerNodes`; the deployer's Deployment (`maxSurge: 1`) starts the
new pod on the spare node, moves traffic once it is ready and stops the old pod. When the
deployer reports the new generation `InferenceReady`, the provisioner frees the node no ready
pod of the Workspace is on (the old one; or the spare, if the pod never had to move). The old
node is recorded as `status.surgeReplaces` from the start (the spare has no name before it
exists, and `workerNodes` is empty while it is being made), so the surge is told apart from a
scale-down, and survives a restart of the provisioner.

Where no spare node can be had (a backend that cannot make one for a moment, such as AKS agent
pools, whose scale-down picks its own victim, or your own nodes; or a cloud that refuses it),
the nodes are reported as they are: the deployer then replaces the pod in place
(`maxUnavailable: 1`), with downtime, and `ResourceReady`'s message says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

JSON = dict[str, Any]
Phase = Literal["none", "begin", "rolling", "done"]


@dataclass(frozen=True)
class Surge:
    """Where a Workspace is in a surge, and the nodes it concerns."""

    phase: Phase
    nodes: tuple[str, ...] = ()
    """begin: the serving node; rolling: both; done: the node to keep."""
    replaces: str | None = None
    """The node the spare replaces (status.surgeReplaces): the old pod's."""


def _condition(raw: JSON, kind: str) -> JSON | None:
    for condition in (raw.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def _single(raw: JSON) -> bool:
    """An inference Workspace whose plan is one replica on one node."""
    plan = (raw.get("status") or {}).get("plan") or {}
    return (
        raw.get("inference") is not None
        and int(plan.get("nodeCount") or 0) == 1
        and int(plan.get("replicas") or 1) == 1
    )


def _serving_on(pods: list[JSON]) -> set[str]:
    """The nodes of the Workspace's ready, running pods."""
    nodes = set()
    for pod in pods:
        status = pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        node = (pod.get("spec") or {}).get("nodeName")
        if ready and node and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            nodes.add(str(node))
    return nodes


def surge_of(raw: JSON, pods: list[JSON] | None = None) -> Surge:
    """The surge phase of the Workspace `raw` (as the view holds it), given its pods."""
    if not _single(raw):
        return Surge("none")
    status = raw.get("status") or {}
    digest = (status.get("plan") or {}).get("digest")
    current = tuple(status.get("workerNodes") or ())
    reported_for = status.get("workerNodesPlanDigest")
    replaces = status.get("surgeReplaces")
    if replaces:
        if len(current) == 2 and replaces in current:  # noqa: PLR2004 - the old node, the spare
            serving = _condition(raw, "InferenceReady") or {}
            done = (
                reported_for == digest
                and serving.get("status") == "True"
                and serving.get("observedGeneration")
                == (raw.get("metadata") or {}).get("generation")
            )
            if done:
                # Keep the node the serving pod is on: the spare, unless the update needed no
                # new pod (its template did not change) and the pod stayed where it was.
                spare = tuple(n for n in current if n != replaces)
                serving_on = _serving_on(pods or [])
                if replaces in serving_on and not serving_on & set(spare):
                    return Surge("done", (replaces,))
                return Surge("done", spare)
            # Rolling; or planned again meanwhile: the same two nodes serve the newer plan.
            return Surge("rolling", current, replaces)
        return Surge("begin", (replaces,), replaces)  # the spare is still coming
    if len(current) == 1 and reported_for and reported_for != digest:
        # Its node was chosen for a previous plan: the old pod is there (serving, or not yet
        # ready; the deployer may already say it waits for the new generation's nodes).
        return Surge("begin", current, current[0])
    return Surge("none")
