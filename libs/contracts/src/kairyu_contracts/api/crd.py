"""Generates the Workspace CustomResourceDefinition from the pydantic models.

The models are the single source of truth: their JSON schema is rewritten into the structural
OpenAPI v3 subset Kubernetes accepts (no $ref, no anyOf-with-null, no titles, no defaults), and the
CEL rules declared on the models are carried over. `python -m kairyu_contracts.api` prints the
YAML; the committed copy is checked against it by a test.
"""

from __future__ import annotations

from typing import Any

import yaml

from kairyu_contracts.api.inferenceset import (
    INFERENCESET_KIND,
    INFERENCESET_PLURAL,
    InferenceSetV1Alpha1,
    InferenceSetV1Beta1,
    _InferenceSet,
)
from kairyu_contracts.api.multiroleinference import (
    MULTIROLE_KIND,
    MULTIROLE_PLURAL,
    MultiRoleInference,
)
from kairyu_contracts.api.workspace import (
    GROUP,
    KIND,
    PLURAL,
    WorkspaceV1Alpha1,
    WorkspaceV1Beta1,
    _Workspace,
)

# Keys of JSON schema that have no place (or no meaning) in a Kubernetes structural schema.
_DROPPED_KEYS = {"title", "default", "$defs", "const"}


def _condition_column(name: str, condition: str) -> dict[str, str]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status',
    }


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
_INSTANCE = {"name": "Instance", "type": "string", "jsonPath": ".resource.instanceType"}

# v1alpha1 shows the seed's columns; v1beta1 shows KAITO's current ones.
PRINTER_COLUMNS: dict[str, list[dict[str, str]]] = {
    "v1alpha1": [
        _INSTANCE,
        _condition_column("ResourceReady", "ResourceReady"),
        _condition_column("InferenceReady", "InferenceReady"),
        _condition_column("WorkspaceReady", "WorkspaceReady"),
        _AGE,
    ],
    "v1beta1": [
        _INSTANCE,
        _condition_column("ResourceReady", "ResourceReady"),
        _condition_column("InferenceReady", "InferenceReady"),
        _condition_column("JobStarted", "JobStarted"),
        _condition_column("WorkspaceSucceeded", "WorkspaceSucceeded"),
        {"name": "TargetNodeCount", "type": "integer", "jsonPath": ".status.targetNodeCount"},
        {"name": "State", "type": "string", "jsonPath": ".status.state"},
        _AGE,
    ],
}
# After KAITO's columns, shown by `-o wide` only: what kairyu chose, which KAITO's Instance
# column (the spec's instanceType) leaves empty when the planner picks the SKU.
_WIDE = [
    {
        "name": "PlannedInstance",
        "type": "string",
        "jsonPath": ".status.plan.instanceType",
        "priority": 1,
    },
    {"name": "Nodes", "type": "integer", "jsonPath": ".status.plan.nodeCount", "priority": 1},
    {
        "name": "CostPerHour",
        "type": "string",
        "jsonPath": ".status.plan.estimatedCostPerHour",
        "priority": 1,
    },
]
# `kubectl scale workspace` (and an HPA or KEDA) sets spec.replicas; the deployer reports the
# workload's replicas and the pods' selector.
SCALE = {
    "specReplicasPath": ".spec.replicas",
    "statusReplicasPath": ".status.inference.replicas",
    "labelSelectorPath": ".status.inference.selector",
}


def structural_schema(
    model: type[_Workspace] | type[_InferenceSet] | type[MultiRoleInference],
) -> dict[str, Any]:
    """The OpenAPI v3 schema of one version of a kaito.sh kind, in structural form."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = raw.get("$defs", {})
    schema: dict[str, Any] = _rewrite(raw, defs)
    # The apiserver owns metadata's schema; a CRD may only say it is an object.
    schema["properties"]["metadata"] = {"type": "object"}
    for key in ("apiVersion", "kind"):
        schema["properties"][key] = {"type": "string"}
    schema["required"] = sorted(
        set(schema.get("required", [])) - {"apiVersion", "kind", "metadata"}
    )
    return schema


def _rewrite(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_rewrite(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = _resolve(dict(node), defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _rewrite(prop, defs) for name, prop in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _rewrite(value, defs)
        elif key == "x-kairyu-default":  # pydantic's own defaults are not the apiserver's
            out["default"] = value
        elif key == "description":  # attribute docstrings wrap lines; the CRD wants prose
            out[key] = " ".join(value.split())
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
    return out


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Replace JSON-schema constructs Kubernetes does not accept with their structural form."""
    if node.get("x-kubernetes-int-or-string"):  # int | str: Kubernetes' own way to say it
        node.pop("anyOf", None)
        return node
    if "$ref" in node:  # inline the definition; sibling keys (description, CEL rules) win
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = _merge(target, node)
    if "anyOf" in node:  # Optional[X] is anyOf [X, null]: absent is how Kubernetes says "null"
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {variants}")
        node = _merge(variants[0], node)
        if "$ref" in node:
            return _resolve(node, defs)
    if "const" in node:
        node["enum"] = [node["const"]]
    if node.get("additionalProperties") is True:  # dict[str, Any]: schemaless
        del node["additionalProperties"]
        node["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    return node


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = {**base, **overlay}
    rules = base.get("x-kubernetes-validations", []) + overlay.get("x-kubernetes-validations", [])
    if rules:
        merged["x-kubernetes-validations"] = rules
    return merged


def _crd(  # noqa: PLR0917 - one call per CRD, each argument named by its position's meaning
    kind: str,
    plural: str,
    short_names: list[str],
    categories: list[str],
    models: (
        tuple[type[_Workspace], type[_Workspace]]
        | tuple[type[_InferenceSet], ...]
        | tuple[type[MultiRoleInference]]
    ),
    subresources: dict[str, Any],
    columns: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """A kaito.sh CRD serving its versions (`models`, oldest first) from one schema.

    The newest is stored (v1beta1 where there are two, as KAITO does); one schema for both
    versions needs no conversion webhook.
    """
    names: dict[str, Any] = {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        "shortNames": short_names,
    }
    if categories:
        names["categories"] = categories
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": names,
            "scope": "Namespaced",
            "versions": [
                {
                    "name": model.version,
                    "served": True,
                    "storage": model is models[-1],
                    "schema": {"openAPIV3Schema": structural_schema(model)},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns[model.version],
                }
                for model in models
            ],
        },
    }


def workspace_crd() -> dict[str, Any]:
    """The Workspace CustomResourceDefinition serving v1alpha1 and v1beta1 (storage)."""
    return _crd(
        KIND,
        PLURAL,
        ["wk", "wks"],
        ["workspace"],
        (WorkspaceV1Alpha1, WorkspaceV1Beta1),
        {"status": {}, "scale": dict(SCALE)},
        {version: columns + _WIDE for version, columns in PRINTER_COLUMNS.items()},
    )


# After KAITO's columns of a kind that makes Workspaces, with `-o wide`: its nodes and its cost.
_WIDE_PARENT = [
    {"name": "Nodes", "type": "integer", "jsonPath": ".status.nodeCount", "priority": 1},
    {
        "name": "CostPerHour",
        "type": "string",
        "jsonPath": ".status.estimatedCostPerHour",
        "priority": 1,
    },
]
INFERENCESET_COLUMNS: list[dict[str, Any]] = [
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "ReadyReplicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
    _AGE,
    *_WIDE_PARENT,
]


def inferenceset_crd() -> dict[str, Any]:
    """The InferenceSet CustomResourceDefinition serving v1alpha1 and v1beta1 (storage)."""
    return _crd(
        INFERENCESET_KIND,
        INFERENCESET_PLURAL,
        ["is", "isets"],
        # No "workspace" category: kubectl would then read `kubectl get workspace` as the
        # category (both kinds) and refuse `kubectl delete workspace x`.
        [],
        (InferenceSetV1Alpha1, InferenceSetV1Beta1),
        {
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        },
        {"v1alpha1": INFERENCESET_COLUMNS, "v1beta1": INFERENCESET_COLUMNS},
    )


MULTIROLE_COLUMNS: list[dict[str, Any]] = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
    _condition_column("Ready", "Ready"),
    _AGE,
    *_WIDE_PARENT,
]


def multirole_crd() -> dict[str, Any]:
    """The MultiRoleInference CustomResourceDefinition (v1alpha1 only, as KAITO's)."""
    return _crd(
        MULTIROLE_KIND,
        MULTIROLE_PLURAL,
        ["mri"],
        [],
        (MultiRoleInference,),
        {"status": {}},
        {"v1alpha1": MULTIROLE_COLUMNS},
    )


CRDS = {
    PLURAL: workspace_crd,
    INFERENCESET_PLURAL: inferenceset_crd,
    MULTIROLE_PLURAL: multirole_crd,
}
"""Every CRD kairyu serves, by plural: each is committed as config/crd/kaito.sh_<plural>.yaml."""


class _NoAliasDumper(yaml.SafeDumper):
    """Writes repeated values out in full: anchors would make the CRD hard to read and diff."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_yaml(plural: str = PLURAL) -> str:
    """A CRD as committed under config/crd/ (a plural of `CRDS`)."""
    crd = CRDS[plural]()
    header = (
        f"# Generated by `python -m kairyu_contracts.api {plural}` from kairyu_contracts.api;"
        " do not edit.\n"
    )
    return header + yaml.dump(crd, Dumper=_NoAliasDumper, sort_keys=False, width=120)
