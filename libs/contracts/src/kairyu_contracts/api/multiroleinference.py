"""The kaito.sh MultiRoleInference (KAITO v0.12, v1alpha1): one model served by prefill and decode.

Prefill/decode disaggregation: one pool of replicas computes the prompt's KV cache, another
generates tokens from it, the cache moving between them over NIXL. As in KAITO, the object is a
pair of InferenceSets, `<name>-prefill` and `<name>-decode`, each made from the role's
`instanceType`, `replicas` and `runtimeConfig` and the shared model; the sets then make the
Workspaces. Field for field as KAITO's `api/v1alpha1/multiroleinference_types.go`; kairyu adds
the pair's node count and cost to the status.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from kairyu_contracts.api._base import ApiModel
from kairyu_contracts.api.inferenceset import MAX_NAME as MAX_SET_NAME
from kairyu_contracts.api.inferenceset import MAX_REPLICAS
from kairyu_contracts.api.meta import Conditions, LabelSelector, ObjectMeta
from kairyu_contracts.api.workspace import cel

MULTIROLE_KIND = "MultiRoleInference"
MULTIROLE_PLURAL = "multiroleinferences"
ROLES = ("prefill", "decode")
MAX_NAME = MAX_SET_NAME - len("-prefill")
"""A MultiRoleInference's longest name: its InferenceSets are `<name>-prefill` and `-decode`."""


class RoleSpec(ApiModel):
    """One role: which GPU nodes and how many replicas serve it."""

    type: Literal["prefill", "decode"]
    replicas: Annotated[int | None, Field(ge=1, le=MAX_REPLICAS)] = None
    """The role's InferenceSet replicas; absent: left to whoever scales the set (HPA, KEDA)."""
    instance_type: Annotated[str | None, Field(max_length=128)] = None
    """The role's GPU SKU; absent: kairyu's planner picks one (KAITO requires it with NAP)."""
    runtime_config: Annotated[str | None, Field(max_length=253)] = None
    """A ConfigMap of role-specific vLLM settings: the role's `inference.config`."""


class ModelSpec(ApiModel):
    """The model both roles serve: a preset name or a Hugging Face id."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    model_access_secret: Annotated[str | None, Field(max_length=253)] = None


class MultiRoleInferenceSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "(has(self.labelSelector.matchLabels) && "
                    "size(self.labelSelector.matchLabels) > 0) || "
                    "(has(self.labelSelector.matchExpressions) && "
                    "size(self.labelSelector.matchExpressions) > 0)",
                    "labelSelector must have at least one matchLabels or matchExpressions entry",
                ),
                cel(
                    "self.roles.exists(r, r.type == 'prefill') && "
                    "self.roles.exists(r, r.type == 'decode')",
                    "exactly one prefill and one decode role required",
                ),
            ]
        }
    )

    label_selector: LabelSelector
    """The GPU nodes' labels; each role's set adds its role to it."""
    model: ModelSpec
    epp_plugins_config: Annotated[str | None, Field(max_length=253)] = None
    """KAITO's endpoint-picker plugins ConfigMap (used with the Gateway API Inference
    Extension, which kairyu does not deploy: accepted and kept)."""
    roles: Annotated[list[RoleSpec], Field(min_length=2, max_length=2)]


class MultiRoleInferenceStatus(ApiModel):
    """Written by kairyu's planner (the MultiRoleInference's controller)."""

    conditions: Conditions = None
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    node_count: Annotated[int | None, Field(ge=0)] = None
    """GPU nodes both roles' plans use together (kairyu)."""
    estimated_cost_per_hour: str | None = None
    """List price of both roles' planned nodes per hour, in USD (kairyu)."""


class MultiRoleInference(ApiModel):
    """A kaito.sh/v1alpha1 MultiRoleInference."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.metadata.name.size() <= {MAX_NAME}",
                    f"metadata.name must be at most {MAX_NAME} characters: its InferenceSets "
                    f"are <name>-prefill and <name>-decode, at most {MAX_SET_NAME}",
                ),
            ]
        }
    )
    version: ClassVar[str] = "v1alpha1"

    api_version: Literal["kaito.sh/v1alpha1"] = "kaito.sh/v1alpha1"
    kind: Literal["MultiRoleInference"] = "MultiRoleInference"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: MultiRoleInferenceSpec
    status: MultiRoleInferenceStatus | None = None


def parse_multirole(obj: dict[str, Any]) -> MultiRoleInference:
    """A MultiRoleInference from the apiserver, validated; raises ValidationError."""
    return MultiRoleInference.model_validate(obj)
