"""What a MultiRoleInference needs: its two InferenceSets and its status (pure).

As in KAITO, a MultiRoleInference is a pair of InferenceSets, `<name>-prefill` and
`<name>-decode`, each the role's replicas of one Workspace template: the shared model (and its
access Secret), the role's `instanceType` and `runtimeConfig` (the Workspace's inference config),
and the parent's node selector with the role added. Both carry
`multiroleinference.kaito.sh/created-by` and `kaito.sh/inference-role`, on the set, its template
(so on each Workspace, whose pods the deployer labels and starts as that role) and its node
selector, and the parent is their controlling owner: deleting it deletes the sets, their
Workspaces and, through the provisioner, their GPU nodes.

A set is written only when what kairyu would write differs from what it last wrote (a digest in
an annotation the view holds) or from what the set now says (someone edited or scaled it: the
parent wins, as KAITO's CreateOrUpdate does), so a status change of a child costs no write. A
role without `replicas` leaves the set's replica count to whoever scales it (HPA, KEDA), as in
KAITO; the count the set has is then written back unchanged, because dropping the field from
a server-side apply would reset it to the default of 1.

A set of that name the parent does not control is never written: the role's condition says so,
and the parent looks again while the name is taken.

kairyu deploys no Gateway API Inference Extension (InferencePool, endpoint picker), which KAITO
too leaves off by default (`gatewayAPIInferenceExtension`); `InferencePoolReady` then says so,
True as in KAITO, and each role's Workspaces answer on their own Services.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kairyu_contracts.api.meta import DNS1123_LABEL
from kairyu_contracts.api.multiroleinference import ROLES
from kairyu_contracts.labels import MULTIROLE_LABEL, ROLE_LABEL
from kairyu_contracts.workloads import controller_uid
from kairyu_core.kube import applied_digest, digest_of, stamped

JSON = dict[str, Any]
PREFILL_READY = "PrefillReady"
DECODE_READY = "DecodeReady"
POOL_READY = "InferencePoolReady"
READY = "Ready"
CONDITION_TYPES = (PREFILL_READY, DECODE_READY, POOL_READY, READY)
_ROLE_CONDITION = {"prefill": PREFILL_READY, "decode": DECODE_READY}
_NO_POOL = (
    "no InferencePool: kairyu does not deploy the Gateway API Inference Extension; each role's "
    "Workspaces answer on their own Services"
)


def multirole_errors(obj: JSON, old: JSON | None) -> list[str]:
    """KAITO's webhook rules for a MultiRoleInference, with its messages (`old`: on UPDATE)."""
    errors: list[str] = []
    name = str((obj.get("metadata") or {}).get("name") or "")
    if not re.match(DNS1123_LABEL, name):
        errors.append(f"invalid value: {name}: metadata.name (a DNS-1123 label is required)")
    spec = obj.get("spec") or {}
    model = str((spec.get("model") or {}).get("name") or "")
    if not model:
        errors.append("missing field(s): spec.model.name")
    selector = spec.get("labelSelector") or {}
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        errors.append(
            "labelSelector must have at least one matchLabels or matchExpressions entry: "
            "spec.labelSelector"
        )
    roles = [str(r.get("type")) for r in spec.get("roles") or []]
    if len(roles) != len(ROLES):
        errors.append(
            f"exactly 2 roles required (one prefill, one decode), got {len(roles)}: spec.roles"
        )
    for role in ROLES:
        if roles.count(role) > 1:
            errors.append(f"duplicate {role} role: spec.roles")
        elif role not in roles:
            errors.append(f"missing field(s): spec.roles ({'missing ' + role + ' role'})")
    for other in sorted(set(roles) - set(ROLES)):
        errors.append(f'unsupported role type "{other}", must be prefill or decode: spec.roles')
    if old is not None:
        before = str(((old.get("spec") or {}).get("model") or {}).get("name") or "")
        if before and before != model:
            errors.append(
                f'model name is immutable, was "{before}", now "{model}": spec.model.name'
            )
    return errors


def set_name(parent: str, role: str) -> str:
    return f"{parent}-{role}"


def role_set(parent: JSON, role: JSON) -> JSON:
    """The InferenceSet of one role (without the applied digest)."""
    meta = parent["metadata"]
    spec = parent.get("spec") or {}
    model = spec.get("model") or {}
    kind = str(role.get("type"))
    marks = {MULTIROLE_LABEL: meta["name"], ROLE_LABEL: kind}
    selector = dict(spec.get("labelSelector") or {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), **marks}
    preset: JSON = {"name": model.get("name")}
    if model.get("modelAccessSecret"):
        preset["presetOptions"] = {"modelAccessSecret": model["modelAccessSecret"]}
    inference: JSON = {"preset": preset}
    if role.get("runtimeConfig"):
        inference["config"] = role["runtimeConfig"]
    template_meta: JSON = {
        "labels": {**((spec.get("labelSelector") or {}).get("matchLabels") or {}), **marks}
    }
    # KAITO copies the parent's annotations onto the Workspaces (runtime, opt-outs and the like).
    if meta.get("annotations"):
        template_meta["annotations"] = dict(meta["annotations"])
    template: JSON = {"metadata": template_meta, "inference": inference}
    if role.get("instanceType"):
        template["resource"] = {"instanceType": role["instanceType"]}
    set_spec: JSON = {"template": template, "labelSelector": selector}
    if isinstance(role.get("replicas"), int):
        set_spec["replicas"] = role["replicas"]
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "metadata": {
            "name": set_name(meta["name"], kind),
            "namespace": meta["namespace"],
            "labels": dict(marks),
            "ownerReferences": [
                {
                    "apiVersion": parent.get("apiVersion", "kaito.sh/v1alpha1"),
                    "kind": "MultiRoleInference",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": set_spec,
    }


@dataclass
class RoleDecision:
    """What to do for a MultiRoleInference.

    `create`: sets that do not exist (created, never applied over a stranger's); `update`: its
    own sets to apply again (carrying the uid they have, a precondition); both stamped with their
    digest. `delete`: sets of roles it no longer has. `taken`: a role's name is held by a set it
    does not control.
    """

    create: list[JSON] = field(default_factory=list)
    update: list[JSON] = field(default_factory=list)
    delete: list[JSON] = field(default_factory=list)
    status: JSON = field(default_factory=dict)
    taken: bool = False


def _drifted(held: JSON, desired: JSON) -> bool:
    """Whether the set no longer says what kairyu wrote (an edit, a `kubectl scale`)."""
    spec = held.get("spec") or {}
    labels = (held.get("metadata") or {}).get("labels") or {}
    wanted = desired["metadata"]["labels"]
    return any(spec.get(k) != v for k, v in desired["spec"].items()) or any(
        labels.get(k) != v for k, v in wanted.items()
    )


def _set_ready(child: JSON) -> tuple[bool, str]:
    """Whether the set's InferenceSetReady is True for its generation, and its message."""
    generation = (child.get("metadata") or {}).get("generation")
    for c in (child.get("status") or {}).get("conditions") or []:
        if c.get("type") == "InferenceSetReady":
            fresh = c.get("observedGeneration") == generation
            return c.get("status") == "True" and fresh, str(c.get("message") or "")
    return False, ""


def _condition(kind: str, ok: bool, reason: str, message: str, generation: Any) -> JSON:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def _write(decision: RoleDecision, desired: JSON, held: JSON | None) -> None:
    """Add the set `desired` to what `decision` creates or updates, if it needs a write."""
    digest = applied_digest([desired])
    if held is None:
        decision.create.append(stamped(desired, digest))
        return
    if digest_of(held) == digest and not _drifted(held, desired):
        return
    body = stamped(desired, digest)
    body["metadata"]["uid"] = held["metadata"].get("uid")
    count = (held.get("spec") or {}).get("replicas")
    if "replicas" not in body["spec"] and isinstance(count, int):
        body["spec"]["replicas"] = count  # the scaler's, kept (see the module's docstring)
    decision.update.append(body)


def decide_roles(parent: JSON, members: list[JSON], others: dict[str, JSON]) -> RoleDecision:
    """What to do for the MultiRoleInference `parent`.

    `members`: the InferenceSets labelled as its children; `others`: InferenceSets holding the
    name of one of its roles' sets, by name, whoever owns them (the parent's own included).
    """
    meta = parent["metadata"]
    uid = str(meta.get("uid") or "")
    generation = meta.get("generation")
    roles = {str(r.get("type")): r for r in (parent.get("spec") or {}).get("roles") or []}
    decision = RoleDecision()
    wanted = {set_name(meta["name"], role) for role in roles}
    ours = [c for c in members if controller_uid(c) == uid]
    decision.delete = [
        c
        for c in ours
        if c["metadata"]["name"] not in wanted and not c["metadata"].get("deletionTimestamp")
    ]
    conditions: list[JSON] = []
    nodes = 0
    costs: list[Any] = []
    for role in ROLES:
        name = set_name(meta["name"], role)
        kind = _ROLE_CONDITION[role]
        title = role.capitalize()
        held = others.get(name)
        if held is not None and controller_uid(held) != uid:
            decision.taken = True
            conditions.append(
                _condition(
                    kind,
                    False,
                    f"{title}NotReady",
                    f"InferenceSet {name} exists and is not this MultiRoleInference's",
                    generation,
                )
            )
            continue
        if role in roles and not meta.get("deletionTimestamp"):
            _write(decision, role_set(parent, roles[role]), held)
        if held is None:
            conditions.append(
                _condition(
                    kind, False, f"{title}NotFound", f"{title} InferenceSet not found", generation
                )
            )
            continue
        ready, said = _set_ready(held)
        held_status = held.get("status") or {}
        nodes += int(held_status.get("nodeCount") or 0)
        costs.append(held_status.get("estimatedCostPerHour"))
        message = f"{title} InferenceSet is ready"
        if not ready:
            message = f"{title} InferenceSet is not ready" + (f": {said}" if said else "")
        reason = f"{title}Ready" if ready else f"{title}NotReady"
        conditions.append(_condition(kind, ready, reason, message, generation))
    conditions.append(_condition(POOL_READY, True, POOL_READY, _NO_POOL, generation))
    done = all(c["status"] == "True" for c in conditions)
    conditions.append(
        _condition(
            READY,
            done,
            READY if done else "NotReady",
            "All components are ready" if done else "Not all components are ready",
            generation,
        )
    )
    status: JSON = {"conditions": conditions, "observedGeneration": generation, "nodeCount": nodes}
    if costs and all(c is not None for c in costs):
        status["estimatedCostPerHour"] = f"{sum(float(c) for c in costs):.2f}"
    decision.status = status
    return decision


def failed(status: JSON, name: str, error: str) -> JSON:
    """`status` with Ready False because the apiserver refused the set `name` (KAITO's reason)."""
    conditions = [
        {
            **c,
            "status": "False",
            "reason": "ReconcileFailed",
            "message": f"Failed to reconcile {name}: {error}"[:1024],
        }
        if c["type"] == READY
        else c
        for c in status["conditions"]
    ]
    return {**status, "conditions": conditions}
