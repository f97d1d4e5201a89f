"""Kubernetes Events on a Workspace: the history `kubectl describe workspace` shows.

Conditions hold only the latest state; an Event records each step that led there (a SKU refused
for quota, the re-plan that followed), so the story of a rollout survives the next transition.
Recording is best effort: a lost Event must never fail the work it describes.
"""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime
from typing import Any, Literal

from kairyu_core.kube import errors
from kairyu_core.kube.client import KubeClient
from kairyu_core.kube.resources import EVENTS

log = logging.getLogger(__name__)
_MAX_MESSAGE = 1024


async def record(
    client: KubeClient,
    obj: dict[str, Any],
    *,
    reason: str,
    message: str,
    component: str,
    type: Literal["Normal", "Warning"] = "Normal",
) -> None:
    """Create a core/v1 Event about `obj` (a namespaced object as read from the apiserver)."""
    meta = obj["metadata"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:_MAX_MESSAGE],
        "type": type,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": socket.gethostname(),
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await client.request("POST", EVENTS.path(namespace=meta["namespace"]), body=body)
    except errors.KubeError as exc:
        log.warning("could not record event %s on %s: %s", reason, meta["name"], exc)
