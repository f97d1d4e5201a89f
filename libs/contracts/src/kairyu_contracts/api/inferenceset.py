"""The kaito.sh InferenceSet (KAITO v0.11+): N identical inference Workspaces behind one object.

KAITO's recommended way to serve since v0.11. The set holds a Workspace template (`resource`
and `inference`) and a replica count with the scale subresource, so `kubectl scale`, an HPA or
KEDA changes how many child Workspaces (each on its own GPU nodes) serve the model. Field for
field as KAITO's `api/v1beta1/inferenceset_types.go`, both versions one schema; kairyu adds the
set's cost and node count to the status.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, TypeAdapter

from kairyu_contracts.api._base import ApiModel
from kairyu_contracts.api.meta import Conditions, LabelSelector, ObjectMeta
from kairyu_contracts.api.workspace import (
    MAX_NODE_COUNT,
    InferenceSpec,
    PartitionSpec,
    cel,
)
from kairyu_contracts.labels import AUTO_PROVISION_ANNOTATION

INFERENCESET_KIND = "InferenceSet"
INFERENCESET_PLURAL = "inferencesets"
MAX_NAME = 57
"""A set's longest name: its children are `<name>-` and 5 characters, a DNS label of at most 63."""
MAX_REPLICAS = MAX_NODE_COUNT
"""The most child Workspaces a set may ask for; each needs at least one GPU node."""

LOAD_METRICS = ("vllm:num_requests_waiting", "vllm:num_requests_running")
"""The load gauges both runtimes export under vLLM's names: the ones a set may scale on."""


def autoscaled(inference_set: dict[str, Any]) -> bool:
    """Whether the set opts in to autoscaling (`scaledobject.kaito.sh/auto-provision: "true"`)."""
    annotations = (inference_set.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(AUTO_PROVISION_ANNOTATION, "")).lower() == "true"


class TemplateMeta(ApiModel):
    """Labels and annotations copied onto every child Workspace."""

    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class MigSpec(ApiModel):
    """A MIG profile for each child (KAITO's mixed-strategy example writes `resource.mig`)."""

    profile: Annotated[str, Field(min_length=1, max_length=64)]


class TemplateResource(ApiModel):
    """The GPU nodes of each child: its SKU (kairyu picks one when absent) and partition."""

    instance_type: Annotated[str | None, Field(max_length=128)] = None
    partition: PartitionSpec | None = None
    mig: MigSpec | None = None
    """The same as `partition: {mode: mig, profile: ...}`."""


class InferenceSetTemplate(ApiModel):
    """The Workspace each replica is made from."""

    metadata: TemplateMeta | None = None
    resource: TemplateResource | None = None
    inference: InferenceSpec


class RollingUpdate(ApiModel):
    """StatefulSet-style rolling update (KAITO: only the base image is rolled to children)."""

    max_unavailable: Annotated[
        int | str | None,
        Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
    ] = None
    partition: Annotated[int | None, Field(ge=0)] = None


class UpdateStrategy(ApiModel):
    type: Literal["RollingUpdate", "OnDelete"] | None = None
    rolling_update: RollingUpdate | None = None


class MaintenanceWindow(ApiModel):
    schedule: Annotated[str | None, Field(max_length=128)] = None
    """A five-field cron schedule in UTC."""
    duration: Annotated[str | None, Field(max_length=32)] = None
    """How long the window stays open (default 4h)."""


class AutoUpgrade(ApiModel):
    """KAITO's automatic base-image upgrade of children; accepted, not acted on by kairyu."""

    enabled: bool | None = None
    strategy: Literal["InPlace", "Surge"] | None = None
    maintenance_window: MaintenanceWindow | None = None


class InferenceSetSpec(ApiModel):
    """How many replicas of which Workspace, on which nodes."""

    template: InferenceSetTemplate
    replicas: Annotated[
        int | None, Field(ge=0, le=MAX_REPLICAS, json_schema_extra={"x-kairyu-default": 1})
    ] = None
    """Child Workspaces to run (default 1); 0 frees every GPU node of the set."""
    label_selector: LabelSelector
    """Each child's `resource.labelSelector`: the labels its GPU nodes carry."""
    node_count_limit: Annotated[int | None, Field(ge=0, le=MAX_NODE_COUNT * MAX_REPLICAS)] = None
    """The most GPU nodes the whole set may use (0 or absent: no limit beyond the planner's)."""
    update_strategy: UpdateStrategy | None = None
    auto_upgrade: AutoUpgrade | None = None


class AutoUpgradeStatus(ApiModel):
    num_drifted_workspaces: Annotated[int | None, Field(ge=0)] = None
    last_successful_upgrade_time: str | None = None


class InferenceSetStatus(ApiModel):
    """Written by kairyu's planner (the set's controller)."""

    replicas: Annotated[int, Field(ge=0)] = 0
    """Child Workspaces that exist and are not being deleted: the scale subresource's status."""
    ready_replicas: Annotated[int, Field(ge=0)] = 0
    selector: str | None = None
    """The children's pods' label selector in string form (for HPA and KEDA)."""
    conditions: Conditions = None
    performance: Annotated[
        dict[str, Any] | None,
        Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}),
    ] = None
    auto_upgrade: AutoUpgradeStatus | None = None
    node_count: Annotated[int | None, Field(ge=0)] = None
    """GPU nodes the children's plans use together (kairyu)."""
    estimated_cost_per_hour: str | None = None
    """List price of all the children's planned nodes per hour, in USD (kairyu)."""
    observed_generation: Annotated[int | None, Field(ge=0)] = None


class _InferenceSet(ApiModel):
    """A kaito.sh InferenceSet."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.metadata.name.size() <= {MAX_NAME}",
                    f"metadata.name must be at most {MAX_NAME} characters: each replica is a "
                    f"Workspace named <name>-xxxxx, at most 63",
                ),
            ]
        }
    )
    version: ClassVar[str]

    kind: Literal["InferenceSet"] = "InferenceSet"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: InferenceSetSpec
    status: InferenceSetStatus | None = None


class InferenceSetV1Alpha1(_InferenceSet):
    version: ClassVar[str] = "v1alpha1"
    api_version: Literal["kaito.sh/v1alpha1"] = "kaito.sh/v1alpha1"


class InferenceSetV1Beta1(_InferenceSet):
    version: ClassVar[str] = "v1beta1"
    api_version: Literal["kaito.sh/v1beta1"] = "kaito.sh/v1beta1"


InferenceSet = InferenceSetV1Alpha1 | InferenceSetV1Beta1

_EITHER: TypeAdapter[InferenceSet] = TypeAdapter(
    Annotated[InferenceSetV1Alpha1 | InferenceSetV1Beta1, Field(discriminator="api_version")]
)


def parse_inferenceset(obj: dict[str, Any]) -> InferenceSet:
    """An InferenceSet from the apiserver (either version), validated; raises ValidationError."""
    return _EITHER.validate_python(obj)
