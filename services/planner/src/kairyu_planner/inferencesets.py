"""What an InferenceSet needs: which child Workspaces to create or delete, and its status (pure).

The set is N copies of one Workspace. Each child is an ordinary Workspace (so the planner plans
it, the provisioner brings its GPU nodes, the deployer serves it, exactly as any other), named
`<set>-<5 characters>` as KAITO's `generateName: <set>-` names them and labelled
`inferenceset.kaito.sh/created-by: <set>`, with the set as its controlling owner: deleting the
set deletes the children, whose nodes the provisioner then frees.

The suffix is not random but derived from the set's uid and a replica ordinal, so a create
retried after a crash or an unanswered request asks for the same name again and the apiserver's
AlreadyExists makes it harmless (random names would make a second child).

Scaling down removes the newest children first (creation time, then name), and with them their
GPU nodes; `replicas: 0` removes all. As in KAITO, template edits are not rolled out to existing
children. `nodeCountLimit` caps the set's nodes: replicas are added only while the nodes their
plans need (known from a planned child) stay within it; until a child is planned, only one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from kairyu_contracts.labels import INFERENCESET_LABEL
from kairyu_contracts.workloads import controller_reference, controller_uid

JSON = dict[str, Any]
SET_VERSION = "kaito.sh/v1beta1"
READY_TYPE = "InferenceSetReady"
READY_REASON = "InferencesetReady"
NOT_READY_REASON = "inferencesetNotReady"
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generateName alphabet: no vowels, no 0/1/3
_SUFFIX = 5


def child_name(set_name: str, set_uid: str, ordinal: int) -> str:
    """`<set>-xxxxx`, the same for the same set and ordinal."""
    digest = int.from_bytes(hashlib.sha256(f"{set_uid}/{ordinal}".encode()).digest()[:8], "big")
    suffix = ""
    for _ in range(_SUFFIX):
        digest, index = divmod(digest, len(_ALPHABET))
        suffix += _ALPHABET[index]
    return f"{set_name}-{suffix}"


def child_manifest(inference_set: JSON, name: str) -> JSON:
    """The Workspace of one replica: the template's resource and inference, the set's selector."""
    meta = inference_set["metadata"]
    spec = inference_set.get("spec") or {}
    template = spec.get("template") or {}
    template_meta = template.get("metadata") or {}
    resource: JSON = {"labelSelector": spec.get("labelSelector") or {}}
    for key in ("instanceType", "partition"):
        value = (template.get("resource") or {}).get(key)
        if value:
            resource[key] = value
    mig = (template.get("resource") or {}).get("mig") or {}
    if mig.get("profile") and "partition" not in resource:
        resource["partition"] = {"mode": "mig", "profile": mig["profile"]}
    metadata: JSON = {
        "name": name,
        "namespace": meta["namespace"],
        "labels": {**(template_meta.get("labels") or {}), INFERENCESET_LABEL: meta["name"]},
        "ownerReferences": [
            controller_reference(inference_set, kind="InferenceSet", api_version=SET_VERSION)
        ],
    }
    if template_meta.get("annotations"):
        metadata["annotations"] = dict(template_meta["annotations"])
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": metadata,
        "resource": resource,
        "inference": template.get("inference") or {},
    }


@dataclass
class Decision:
    """Children to create (names), children to delete (their objects), and the status to write."""

    create: list[str] = field(default_factory=list)
    delete: list[JSON] = field(default_factory=list)
    status: JSON = field(default_factory=dict)


def _ready(child: JSON) -> bool:
    """InferenceReady for the child's generation.

    A condition whose change wakes the planner; the summary (WorkspaceReady, state) wakes nobody
    (docs/watcher.md).
    """
    status = child.get("status") or {}
    generation = (child.get("metadata") or {}).get("generation")
    return any(
        c.get("type") == "InferenceReady"
        and c.get("status") == "True"
        and c.get("observedGeneration") == generation
        for c in status.get("conditions") or []
    )


def _age(child: JSON) -> tuple[str, str]:
    meta = child.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or "~"), str(meta.get("name") or ""))


def decide(
    inference_set: JSON, members: list[JSON], foreign: frozenset[str] = frozenset()
) -> Decision:
    """What to do for `inference_set` given the Workspaces labelled as its children.

    `foreign`: names held by Workspaces that are not the set's (skipped when naming replicas).
    """
    meta = inference_set["metadata"]
    spec = inference_set.get("spec") or {}
    uid = str(meta.get("uid") or "")
    replicas = spec.get("replicas")
    wanted = int(replicas) if isinstance(replicas, int) else 1
    # Only children this very set controls: a same-named set created again must not adopt (or
    # delete) its predecessor's children, which the garbage collector is removing.
    children = [c for c in members if controller_uid(c) == uid]
    live = sorted((c for c in children if not c["metadata"].get("deletionTimestamp")), key=_age)
    plans = [(c.get("status") or {}).get("plan") or {} for c in live]
    per_replica = max((int(p.get("nodeCount") or 0) for p in plans), default=0) or 1
    limit = int(spec.get("nodeCountLimit") or 0)
    allowed = wanted if not limit else min(wanted, limit // per_replica)
    if limit and not any(p.get("nodeCount") for p in plans):
        # How many nodes a replica takes is known once one is planned: until then one replica,
        # so the set never orders more nodes than the limit allows.
        allowed = min(allowed, max(len(live), 1))
    decision = Decision()
    if len(live) > allowed:
        decision.delete = live[allowed:][::-1]  # the newest first
    elif len(live) < allowed and not meta.get("deletionTimestamp"):
        taken = {c["metadata"]["name"] for c in children} | foreign
        ordinal = 0
        while len(decision.create) < allowed - len(live):
            name = child_name(meta["name"], uid, ordinal)
            if name not in taken:
                decision.create.append(name)
            ordinal += 1
    kept = live[: min(len(live), allowed)]
    ready = sum(1 for c in kept if _ready(c))
    nodes = sum(
        int(((c.get("status") or {}).get("plan") or {}).get("nodeCount") or 0) for c in kept
    )
    costs = [((c.get("status") or {}).get("plan") or {}).get("estimatedCostPerHour") for c in kept]
    message = f"{ready}/{wanted} replicas are ready"
    if allowed < wanted and not any(p.get("nodeCount") for p in plans):
        message += "; more once the first replica is planned (nodeCountLimit)"
    elif allowed < wanted:
        message += (
            f"; limited to {allowed} replicas of {per_replica} node(s) by nodeCountLimit {limit}"
        )
    done = ready == wanted and allowed == wanted
    status: JSON = {
        "replicas": len(kept),
        "readyReplicas": ready,
        "selector": f"{INFERENCESET_LABEL}={meta['name']}",
        "nodeCount": nodes,
        "observedGeneration": meta.get("generation"),
        "conditions": [
            {
                "type": READY_TYPE,
                "status": "True" if done else "False",
                "reason": READY_REASON if done else NOT_READY_REASON,
                "message": message,
                "observedGeneration": meta.get("generation"),
            }
        ],
    }
    if costs and all(c is not None for c in costs):
        status["estimatedCostPerHour"] = f"{sum(float(c) for c in costs if c):.2f}"
    decision.status = status
    return decision
