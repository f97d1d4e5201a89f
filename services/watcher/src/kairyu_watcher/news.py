"""Whether a watch event is news to the other services, by a fingerprint of what they act on.

Every status write gives a Workspace a new resourceVersion, and kubelets (kwok here) rewrite a
Node's heartbeat times every few seconds. Publishing each version woke every consumer, and each
re-read the Workspace: the benchmark counted 26 WorkspaceObserved per rollout, 19 of them saying
nothing a service decides on (the watcher's own summary, a progress message, a transition time).

The watcher keeps the fingerprint it last published per object and publishes a change only when
the fingerprint differs. What stays out of a fingerprint is what no handler reads to decide: for a
Workspace the watcher's own `WorkspaceReady`, `status.state` and rollout-trace annotation, and the
other conditions' messages and times (their type, status, reason and generation stay); for a
labelled object its resourceVersion, managedFields and heartbeat times. The periodic resync still
publishes every Workspace, so a skipped change can delay nothing for longer than one interval.
"""

from __future__ import annotations

import hashlib
import json

from kairyu_core.api import ConditionType
from kairyu_core.kube import JSON
from kairyu_core.tracing import ROLLOUT_ANNOTATION


def workspace_fingerprint(raw: JSON) -> str:
    """The parts of a Workspace that some service's handler reads to decide what to do."""
    meta = raw.get("metadata") or {}
    status = raw.get("status") or {}
    annotations = meta.get("annotations") or {}
    decided_on = {
        # Everything outside metadata and status is spec (KAITO's Workspace has no `spec` key).
        "spec": {k: v for k, v in raw.items() if k not in {"metadata", "status"}},
        "metadata": [
            meta.get("uid"),
            meta.get("generation"),
            meta.get("deletionTimestamp"),
            meta.get("finalizers"),
            meta.get("labels"),
            {k: v for k, v in annotations.items() if k != ROLLOUT_ANNOTATION},
        ],
        "status": {k: v for k, v in status.items() if k not in {"conditions", "state"}},
        "conditions": sorted(
            [c.get("type"), c.get("status"), c.get("reason"), c.get("observedGeneration")]
            for c in status.get("conditions") or []
            if c.get("type") != ConditionType.WORKSPACE_READY
        ),
    }
    return _digest(decided_on)


def object_fingerprint(raw: JSON) -> str:
    """A labelled Node, NodeClaim, workload, Job or Pod, less what changes on every write."""
    meta = {k: v for k, v in (raw.get("metadata") or {}).items() if k not in _VOLATILE_METADATA}
    status = dict(raw.get("status") or {})
    if "conditions" in status:  # a Node's heartbeat rewrites lastHeartbeatTime and nothing else
        status["conditions"] = [
            {k: v for k, v in c.items() if k != "lastHeartbeatTime"} for c in status["conditions"]
        ]
    return _digest({**raw, "metadata": meta, "status": status})


_VOLATILE_METADATA = frozenset({"resourceVersion", "managedFields"})


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
