"""Karpenter NodeClaims, one per planned node, as KAITO's gpu-provisioner path creates them.

Why NodeClaims and not a NodePool per Workspace: a NodePool with a fixed node count needs
Karpenter's alpha StaticCapacity gate, and a pool sized by pending pods would make the node count
Karpenter's decision rather than the plan's. A NodeClaim is exactly one node of exactly one SKU,
which is what a plan asks for. Every claim names the shared pool `kaito` (label and requirement),
whose zero limits keep Karpenter from launching or consolidating anything of its own for it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from kairyu_contracts.labels import MACHINE_TYPE_LABEL, WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL
from kairyu_core.kube import JSON, KubeClient, errors, resources
from kairyu_provisioner import naming
from kairyu_provisioner.backends.base import Claims, Owned, Progress
from kairyu_provisioner.failures import CloudFailure, classify
from kairyu_provisioner.node_target import NodeTarget
from kairyu_provisioner.settings import KarpenterSettings

_LIFECYCLE = ("Launched", "Registered", "Initialized", "Ready")
_BENIGN = {"AwaitingReconciliation"}  # Karpenter's "not looked at yet", not a problem
SETTLE_S = 10.0
"""How long a create or delete this process sent is trusted while the view does not show it yet
(s): the watcher publishes the change within milliseconds; past this it is sent again."""
_RECENT_LIMIT = 10_000  # names remembered before the settled ones are forgotten


def node_claim(target: NodeTarget, index: int, settings: KarpenterSettings) -> JSON:
    """The NodeClaim for node `index` of the target's plan."""
    name = naming.node_claim_name(target.uid, target.instance_type, index)
    labels = {
        **target.match_labels,
        **naming.workspace_labels(target.namespace, target.name),
        "karpenter.sh/nodepool": settings.node_pool,
        MACHINE_TYPE_LABEL: "gpu",
    }
    return {
        "apiVersion": resources.NODECLAIMS.api_version,
        "kind": resources.NODECLAIMS.kind,
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                naming.UID_KEY: target.uid,
                "karpenter.sh/do-not-disrupt": "true",
            },
        },
        "spec": {
            "nodeClassRef": {
                "group": settings.node_class_group,
                "kind": settings.node_class_kind,
                "name": settings.node_class_name,
            },
            "taints": [naming.GPU_TAINT],
            "requirements": [
                {
                    "key": "node.kubernetes.io/instance-type",
                    "operator": "In",
                    "values": [target.instance_type],
                },
                {"key": "karpenter.sh/nodepool", "operator": "In", "values": [settings.node_pool]},
                {
                    "key": "karpenter.sh/capacity-type",
                    "operator": "In",
                    "values": [settings.capacity_type],
                },
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            ],
            "resources": {"requests": {"storage": f"{target.disk_gib}Gi"}},
        },
    }


def wanted_claims(target: NodeTarget, claims: Claims) -> dict[str, int]:
    """The NodeClaims the target needs: name → index.

    Claims are numbered; the live ones of this Workspace and SKU are kept (the ones on
    `keep_nodes` first, then the lowest-numbered), and the free lowest numbers fill the rest.
    So a surge's spare (a second number) can outlive the node it replaced, and the next surge
    takes the free number again.
    """
    indexes = {
        naming.node_claim_name(target.uid, target.instance_type, i): i
        for i in range(2 * target.node_count + 2)
    }
    live = {
        indexes[c["metadata"]["name"]]: c
        for c in claims
        if c["metadata"]["name"] in indexes
        and not c["metadata"].get("deletionTimestamp")
        and (c["metadata"].get("annotations") or {}).get(naming.UID_KEY) == target.uid
    }
    # Those on keep_nodes first, then the other live ones by number, then free numbers.
    kept = sorted(
        live,
        key=lambda i: ((live[i].get("status") or {}).get("nodeName") not in target.keep_nodes, i),
    )
    chosen = kept[: target.node_count]
    free = (i for i in range(len(indexes)) if i not in live)
    while len(chosen) < target.node_count:
        chosen.append(next(free))
    return {naming.node_claim_name(target.uid, target.instance_type, i): i for i in sorted(chosen)}


def node_pool(settings: KarpenterSettings) -> JSON:
    """The pool every claim names.

    Zero limits: Karpenter launches nothing of its own for it. A zero disruption budget and no
    consolidation: it never takes a GPU node away.
    """
    return {
        "apiVersion": resources.NODEPOOLS.api_version,
        "kind": resources.NODEPOOLS.kind,
        "metadata": {"name": settings.node_pool},
        "spec": {
            "limits": {"cpu": "0"},
            "disruption": {"consolidateAfter": "Never", "budgets": [{"nodes": "0"}]},
            "template": {
                "spec": {
                    "nodeClassRef": {
                        "group": settings.node_class_group,
                        "kind": settings.node_class_kind,
                        "name": settings.node_class_name,
                    },
                    "requirements": [{"key": WORKSPACE_LABEL, "operator": "Exists"}],
                }
            },
        },
    }


def claim_state(claim: dict[str, Any]) -> tuple[str | None, CloudFailure | None]:
    """("waiting" line or None when Ready, failure or None) from the claim's lifecycle."""
    name = claim["metadata"]["name"]
    conditions = {c.get("type"): c for c in (claim.get("status") or {}).get("conditions") or []}
    for step in _LIFECYCLE:
        cond = conditions.get(step)
        if cond is not None and cond.get("status") == "True":
            continue
        if cond is None or cond.get("reason") in _BENIGN:
            return f"NodeClaim {name}: waiting for {step}", None
        reason, message = cond.get("reason") or "", cond.get("message") or ""
        line = f"NodeClaim {name}: {step} {cond.get('status')} {reason}: {message}".rstrip(": ")
        failed = step == "Launched" and (cond.get("status") == "False" or reason == "LaunchFailed")
        if failed:
            instance_type = _instance_type(claim)
            return line, classify(None, message, instance_type=instance_type, fallback=reason)
        return line, None
    return None, None


def _instance_type(claim: dict[str, Any]) -> str:
    for req in (claim.get("spec") or {}).get("requirements") or []:
        if req.get("key") == "node.kubernetes.io/instance-type" and req.get("values"):
            return str(req["values"][0])
    return ""


class KarpenterBackend:
    name = "karpenter"
    creates_nodes = True
    has_objects = True
    surges = True  # a spare NodeClaim for an update, and the old one deleted after

    def __init__(self, kube: KubeClient, settings: KarpenterSettings, *, field_manager: str):
        self._kube = kube
        self._settings = settings
        self._field_manager = field_manager
        # name → when this process created / deleted it: the view shows a write some
        # milliseconds later, and a reconcile in between must not write it again.
        self._recent: dict[str, tuple[str, float]] = {}

    async def prepare(self) -> None:
        await self._kube.apply(
            resources.NODEPOOLS, node_pool(self._settings), field_manager=self._field_manager
        )

    def node_selector(self, target: NodeTarget) -> str | None:
        return naming.workspace_selector(target.namespace, target.name)

    def _recently(self, name: str, what: str) -> bool:
        done = self._recent.get(name)
        return done is not None and done[0] == what and time.monotonic() - done[1] < SETTLE_S

    def _remember(self, name: str, what: str) -> None:
        now = time.monotonic()
        self._recent[name] = (what, now)
        if len(self._recent) > _RECENT_LIMIT:
            self._recent = {k: v for k, v in self._recent.items() if now - v[1] < SETTLE_S}

    async def _delete(self, name: str) -> None:
        if self._recently(name, "deleted"):
            return
        with contextlib.suppress(errors.NotFoundError):
            await self._kube.delete(resources.NODECLAIMS, name)
        self._remember(name, "deleted")

    async def ensure(self, target: NodeTarget, claims: Claims) -> Progress:
        existing = {c["metadata"]["name"]: c for c in claims}
        wanted = wanted_claims(target, claims)
        for name, claim in existing.items():
            owner = (claim["metadata"].get("annotations") or {}).get(naming.UID_KEY)
            if (name not in wanted or owner != target.uid) and not claim["metadata"].get(
                "deletionTimestamp"
            ):
                await self._delete(name)  # another SKU, a smaller plan, or a predecessor's
        progress = Progress()
        for name, index in sorted(wanted.items(), key=lambda item: item[1]):
            found = existing.get(name)
            if found is None:
                if not self._recently(name, "created"):
                    await self._kube.apply(
                        resources.NODECLAIMS,
                        node_claim(target, index, self._settings),
                        field_manager=self._field_manager,
                    )
                    self._remember(name, "created")
                progress.waiting.append(f"NodeClaim {name}: created")
                continue
            if found["metadata"].get("deletionTimestamp"):
                progress.waiting.append(f"NodeClaim {name}: being deleted, will be created again")
                continue
            line, failure = claim_state(found)
            if line:
                progress.waiting.append(line)
            if failure is not None and progress.failure is None:
                progress.failure = failure
        return progress

    async def discard(self, target: NodeTarget) -> None:
        # The plan's numbers; a claim of this SKU with another one (a surge's spare, kept after
        # it) goes with the re-plan to another SKU that follows (`ensure` drops other SKUs').
        for i in range(target.node_count):
            name = naming.node_claim_name(target.uid, target.instance_type, i)
            self._recent.pop(name, None)
            await self._delete(name)

    async def release(self, namespace: str, name: str, uid: str, claims: Claims) -> list[str]:
        left = []
        for claim in claims:
            meta = claim["metadata"]
            if (meta.get("annotations") or {}).get(naming.UID_KEY) not in (uid, None):
                continue  # a successor Workspace of the same name owns it
            if not meta.get("deletionTimestamp"):
                await self._delete(meta["name"])
            left.append(f"NodeClaim {meta['name']}")
        return left

    async def remaining(self, namespace: str, name: str, uid: str) -> list[str]:
        listed = await self._kube.list(
            resources.NODECLAIMS, label_selector=naming.workspace_selector(namespace, name)
        )
        left = []
        for claim in listed.get("items") or []:
            meta = claim["metadata"]
            if (meta.get("annotations") or {}).get(naming.UID_KEY) not in (uid, None):
                continue
            if not meta.get("deletionTimestamp"):
                await self._delete(meta["name"])  # the view had not shown it yet
            left.append(f"NodeClaim {meta['name']}")
        return left

    async def owned(self, claims: Claims) -> list[Owned]:
        found = []
        for claim in claims:
            meta = claim["metadata"]
            labels = meta.get("labels") or {}
            uid = (meta.get("annotations") or {}).get(naming.UID_KEY)
            if not uid or WORKSPACE_LABEL not in labels:
                continue  # not made by kairyu (KAITO's own claims carry the same labels)
            if meta.get("deletionTimestamp"):
                continue  # on its way out already
            found.append(
                Owned(
                    kind="NodeClaim",
                    name=meta["name"],
                    namespace=labels.get(WORKSPACE_NAMESPACE_LABEL, ""),
                    workspace=labels.get(WORKSPACE_LABEL, ""),
                    uid=uid,
                )
            )
        return found

    async def remove(self, owned: Owned) -> None:
        self._recent.pop(owned.name, None)
        await self._delete(owned.name)
