"""Reading what explains a rollout (kairyu_contracts.rollout_story) from the apiserver.

Shared by `kairyu why` and the watcher's slow-phase Event, so both tell the same story from the
same objects: the Workspace's Events, its NodeClaims and its pods. Only the Workspace itself must
be readable; a kind that is not installed (no Karpenter) or not the reader's to see adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kairyu_contracts.labels import WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL
from kairyu_contracts.rollout_story import Facts
from kairyu_core.kube import KubeClient, errors, resources

JSON = dict[str, Any]


async def read_facts(
    kube: KubeClient, workspace: JSON, *, now: datetime, others: Sequence[JSON]
) -> Facts:
    """The story's facts about `workspace`, as read from the cluster now.

    `others`: Workspaces that finished here, for how long a phase usually takes.
    """
    meta = workspace["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid", "")
    labels = f"{WORKSPACE_LABEL}={name}"
    return Facts(
        workspace=workspace,
        now=now,
        events=await listed(
            kube,
            resources.EVENTS.path(namespace=namespace),
            {"fieldSelector": f"involvedObject.uid={uid}"},
        ),
        node_claims=await listed(
            kube,
            resources.NODECLAIMS.path(),
            {"labelSelector": f"{labels},{WORKSPACE_NAMESPACE_LABEL}={namespace}"},
        ),
        pods=await listed(
            kube, resources.PODS.path(namespace=namespace), {"labelSelector": labels}
        ),
        others=others,
    )


async def listed(kube: KubeClient, path: str, query: dict[str, str | int | bool]) -> list[JSON]:
    """The items of a list, or none when it cannot be read."""
    try:
        found = await kube.request("GET", path, query=query)
    except errors.KubeError:
        return []
    return list(found.get("items") or [])
