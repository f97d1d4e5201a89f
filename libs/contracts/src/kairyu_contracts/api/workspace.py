"""The kaito.sh Workspace, field for field as KAITO defines it, plus kairyu's `status.plan`.

KAITO puts `resource`, `inference` and `tuning` at the top level of the object (there is no
`spec:`), and so do we, so that a user's KAITO YAML applies unchanged. The structural rules that
the apiserver can check on its own (types, enums, patterns, "exactly one of") are declared here as
OpenAPI constraints and CEL rules and end up in the generated CRD; the rules that need other
objects or the GPU catalog (KAITO's webhook checks) belong to the planner.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, TypeAdapter
from pydantic.config import JsonDict, JsonValue

from kairyu_contracts.api._base import ApiModel
from kairyu_contracts.api.meta import (
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    Conditions,
    ConditionStatus,
    LabelSelector,
    ObjectMeta,
    preserve_unknown,
)

GROUP = "kaito.sh"
KIND = "Workspace"
PLURAL = "workspaces"

# A Kubernetes quantity (e.g. "80Gi"); used only in status, where kairyu writes it.
_STRENGTH = r"^(1(\.0+)?|0(\.[0-9]+)?|\.[0-9]+)$"
_HTTP_URL = r"^https?://[^\s]+$"
_MAX_ADAPTERS = 10  # KAITO's webhook limit
MAX_NODE_COUNT = 100
"""The most GPU nodes any Workspace may ask for (`resource.count`), whatever the planner's
settings say: the CRD refuses more, so a typo cannot ask for 100000 GPU nodes even where no
webhook runs. The planner's own limit (KAIRYU_PLANNING__MAX_NODES, at most this) is lower."""

_OBJECT: JsonDict = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_OBJECTS: JsonDict = {"type": "array", "items": _OBJECT}
# The parts of a PodTemplateSpec kairyu reads or adds to must have the right shape, or the
# deployer could not build the workload (a string as `spec` passed before and crashed it on every
# retry); the rest is kept as written and checked by the apiserver when the pod is created.
_POD_TEMPLATE: JsonDict = {
    "x-kubernetes-preserve-unknown-fields": True,
    "required": ["spec"],
    "properties": {
        "metadata": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "required": ["containers"],
            "properties": {
                "containers": {**_OBJECTS, "minItems": 1},
                "initContainers": _OBJECTS,
                "volumes": _OBJECTS,
                "tolerations": _OBJECTS,
                "imagePullSecrets": _OBJECTS,
            },
        },
    },
}


def cel(rule: str, message: str, *, field_path: str | None = None) -> JsonDict:
    """One `x-kubernetes-validations` entry: a CEL rule the apiserver evaluates on write."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def _exactly_one(*fields: str) -> str:
    return " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields) + " == 1"


class PartitionMode(StrEnum):
    """How a GPU is split between workloads."""

    MIG = "mig"
    ACCELERATOR = "accelerator"


class PartitionSpec(ApiModel):
    """A GPU partition request (KAITO v0.12; needs BYO nodes)."""

    mode: PartitionMode
    profile: str | None = None
    """A MIG profile such as 1g.10gb."""
    count: Annotated[int | None, Field(ge=1)] = None
    """Number of partitions, accelerator mode only."""


class ResourceSpec(ApiModel):
    """Which GPU nodes run the Workspace."""

    count: Annotated[int | None, Field(ge=1, le=MAX_NODE_COUNT)] = None
    """Requested GPU node count (deprecated in v1beta1; the planner computes the node count). At
    most the planner's node limit."""
    instance_type: Annotated[str | None, Field(max_length=128)] = None
    """GPU node SKU, e.g. Standard_NC6s_v3. When absent, kairyu's planner picks the cheapest SKU
    that fits the model."""
    label_selector: LabelSelector
    """Nodes that may run the workload; its matchLabels are copied onto provisioned nodes."""
    preferred_nodes: list[str] | None = None
    """Existing nodes to use before provisioning new ones (deprecated in v1beta1)."""
    partition: PartitionSpec | None = None


class AccessMode(StrEnum):
    """Whether the preset's model image is public or the user supplies it."""

    PUBLIC = "public"
    PRIVATE = "private"


class PresetOptions(ApiModel):
    """Options of a preset model."""

    image: str | None = None
    """Private model image (deprecated in v1beta1)."""
    image_pull_secrets: list[str] | None = None
    model_access_secret: str | None = None
    """Secret holding HF_TOKEN, for gated models downloaded at run time."""


class PresetSpec(ApiModel):
    """A model from kairyu's preset catalog, or any Hugging Face repo id (org/model)."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    access_mode: AccessMode | None = None
    preset_options: PresetOptions | None = None


class DataSource(ApiModel):
    """Where data comes from: URLs, an image with the data under /data, or a volume."""

    name: Annotated[str | None, Field(max_length=253, pattern=DNS1123_SUBDOMAIN)] = None
    """Name of the data; also used as the name of the container that fetches it."""
    urls: list[Annotated[str, Field(pattern=_HTTP_URL)]] | None = None
    volume_source: Annotated[
        dict[str, Any] | None, Field(**preserve_unknown("A core/v1 VolumeSource."))
    ] = None
    image: Annotated[str | None, Field(min_length=1)] = None
    """An image whose /data directory holds the data."""
    image_pull_secrets: list[str] | None = None


class AdapterSource(DataSource):
    """Where a LoRA adapter comes from: an image or a volume."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.urls)",
                    "adapters come from an image or a volume; urls are not supported",
                    field_path=".urls",
                ),
                cel(
                    "has(self.image) || has(self.volumeSource)",
                    "an adapter needs an image or a volumeSource",
                ),
            ]
        }
    )
    name: Annotated[str, Field(max_length=253, pattern=DNS1123_SUBDOMAIN)]
    """Name of the adapter; unique within the Workspace."""


class AdapterSpec(ApiModel):
    """A LoRA adapter applied on top of the preset model."""

    source: AdapterSource
    strength: Annotated[str | None, Field(pattern=_STRENGTH)] = None
    """How strongly the adapter is applied: a number from 0 to 1, as a string (default "1.0")."""


class InferenceSpec(ApiModel):
    """Serve a model."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    _exactly_one("preset", "template"),
                    "inference needs exactly one of preset or template",
                ),
            ]
        }
    )
    preset: PresetSpec | None = None
    template: Annotated[
        dict[str, Any] | None,
        Field(
            description="A core/v1 PodTemplateSpec, run as written within the planner's pod "
            "safety rules (no node-level volumes, privileged or host-namespace pods unless the "
            "admin allows them).",
            json_schema_extra=_POD_TEMPLATE,
        ),
    ] = None
    config: str | None = None
    """Name of a ConfigMap in the Workspace's namespace holding inference_config.yaml."""
    adapters: Annotated[
        list[AdapterSpec] | None,
        Field(
            max_length=_MAX_ADAPTERS,
            json_schema_extra={
                "x-kubernetes-validations": [
                    cel(
                        "self.all(a, self.filter(b, b.source.name == a.source.name).size() == 1)",
                        "adapter names must be unique",
                    ),
                ]
            },
        ),
    ] = None


class TuningInput(DataSource):
    """Training data: exactly one of urls, image or volumeSource."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    _exactly_one("urls", "image", "volumeSource"),
                    "tuning input needs exactly one of urls, image or volumeSource",
                ),
            ]
        }
    )


class DataDestination(ApiModel):
    """Where the tuned adapter goes: an image pushed with imagePushSecret, or a volume."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    _exactly_one("image", "volumeSource"),
                    "tuning output needs exactly one of image or volumeSource",
                ),
                cel(
                    "!has(self.image) || has(self.imagePushSecret)",
                    "imagePushSecret is required when output.image is set",
                    field_path=".imagePushSecret",
                ),
            ]
        }
    )
    volume_source: Annotated[
        dict[str, Any] | None, Field(**preserve_unknown("A core/v1 VolumeSource."))
    ] = None
    image: Annotated[str | None, Field(min_length=1)] = None
    image_push_secret: Annotated[str | None, Field(min_length=1)] = None


class TuningSpec(ApiModel):
    """Tune a preset model with LoRA or QLoRA."""

    preset: PresetSpec
    method: Annotated[
        str,
        Field(
            json_schema_extra={
                "x-kubernetes-validations": [
                    cel(
                        "self.lowerAscii() in ['lora', 'qlora']",
                        "tuning method must be lora or qlora",
                    )
                ]
            }
        ),
    ]
    """lora or qlora (case-insensitive)."""
    config: str | None = None
    """Name of a ConfigMap holding training_config.yaml; KAITO's defaults are used when absent."""
    input: TuningInput
    output: DataDestination


class ScaleSpec(ApiModel):
    """The scale subresource's spec: `kubectl scale workspace --replicas=N` writes it.

    KAITO's Workspace has no `spec`, but the apiserver wants a scale subresource's spec path
    under `.spec`; this object holds that one field, and nothing else.
    """

    replicas: Annotated[
        int | None, Field(ge=1, le=MAX_NODE_COUNT, json_schema_extra={"x-kairyu-default": 1})
    ] = None
    """Independent serving replicas of an inference Workspace (default 1), each on its own GPU
    node of the planned SKU."""


class WorkspaceState(StrEnum):
    """The summary state KAITO reports in status.state."""

    PENDING = "Pending"
    READY = "Ready"
    NOT_READY = "NotReady"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Plan(ApiModel):
    """kairyu's plan for the Workspace: what will be provisioned and how the runtime is sized."""

    instance_type: str
    node_count: Annotated[int, Field(ge=1, le=MAX_NODE_COUNT)]
    """All nodes of the plan (nodes per replica x replicas). Capped like resource.count: a status
    written by hand cannot ask the provisioner for more (the provisioner also refuses a plan
    above its own KAIRYU_PROVISIONING__MAX_NODES)."""
    replicas: Annotated[int, Field(ge=1, le=MAX_NODE_COUNT)] = 1
    """Independent serving replicas (spec.replicas); each uses node_count / replicas nodes."""
    gpus_per_node: Annotated[int, Field(ge=1)]
    tensor_parallel_size: Annotated[int, Field(ge=1)]
    pipeline_parallel_size: Annotated[int, Field(ge=1)]
    dtype: str
    """float16 or bfloat16 (bfloat16 needs compute capability 8.0 or newer)."""
    runtime: str
    """vllm, transformers or triton."""
    max_model_len: Annotated[int | None, Field(ge=1)] = None
    runtime_args: list[str] | None = None
    model: str | None = None
    """The Hugging Face repository the runtime loads (`--model`)."""
    model_revision: str | None = None
    """The repository commit a model read from the Hub was sized at (`--revision`)."""
    weights_gib: Annotated[float | None, Field(ge=0)] = None
    """Size of the model's weights: sizes the weights volume and the start-up probe."""
    disk_gib: Annotated[int | None, Field(ge=1, le=65536)] = None
    """OS disk each node needs for the model (the weights are downloaded to it)."""
    quantization: str | None = None
    """The weights' quantization (the model config's quant_method), when they are quantized."""
    estimated_cost_per_hour: str | None = None
    """List price of all planned nodes per hour, in USD, as a decimal string."""
    reason: str | None = None
    """Why this SKU and size were chosen."""
    excluded_instance_types: list[str] | None = None
    """SKUs the cloud refused for this Workspace (quota, capacity); not chosen again."""
    replan_reason: str | None = None
    """The cloud's refusal that made the planner choose again."""
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    workload_digest: str | None = None
    """kairyu: a hash of what else shapes the Workspace's pods (adapters, its own ConfigMap, a
    template), when it has any; part of `digest`, so such an edit is a new plan for the
    provisioner too (a serving single-node Workspace gets a spare node for it)."""
    digest: str | None = None
    """`content_digest()` of this plan, written by the planner: what the provisioner records in
    `status.workerNodesPlanDigest`, so the deployer and the tuner can tell nodes chosen for this
    plan from nodes chosen for an earlier one."""

    def content_digest(self) -> str:
        """A short, stable hash of what the plan asks of the nodes and of the workload.

        Only the fields that decide which nodes are provisioned and how the runtime runs on them
        count: the explanation (`reason`, `replanReason`), the price, the refused SKUs and the
        generation do not, so a re-plan that lands on the same nodes and arguments keeps its
        digest.
        """
        body = self.model_dump(mode="json", include=set(_DIGESTED))
        if body["replicas"] == 1:
            # A single replica hashes as plans did before `replicas` existed, so an upgrade
            # does not re-plan (and re-deploy) every Workspace.
            del body["replicas"]
        if body["workload_digest"] is None:
            del body["workload_digest"]  # likewise for a Workspace with none of those inputs
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


_DIGESTED = (
    "instance_type",
    "node_count",
    "replicas",
    "gpus_per_node",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "dtype",
    "runtime",
    "max_model_len",
    "runtime_args",
    "workload_digest",
)


class ReplanRequest(ApiModel):
    """The provisioner's request for another SKU: the cloud refused the current plan's.

    Written by the provisioner beside `ResourceReady=False` when the cloud refuses the plan's
    instance type for quota or capacity, the Workspace names no instance type, and fewer than
    its `max_replans` SKUs were refused. The planner acts on it only while `planDigest` is the
    current `plan.digest` and `instanceType` the plan's: it plans again without that SKU, and the
    new plan's digest makes the request stale by construction, so it is answered once.
    """

    plan_digest: Annotated[str, Field(max_length=64)]
    """The `plan.digest` of the plan the cloud refused."""
    instance_type: Annotated[str, Field(max_length=128)]
    """The refused SKU (the plan's instance type)."""
    reason: Annotated[str, Field(max_length=1024)] = ""
    """The cloud's refusal, e.g. "QuotaExceeded for Standard_NC4as_T4_v3: ..."; the planner
    shortens it to one line before it reaches `plan.replanReason`."""


class InferenceStatus(ApiModel):
    """The serving replicas, as the scale subresource reports them (written by the deployer)."""

    replicas: Annotated[int, Field(ge=0)] = 0
    """Replicas the workload has: the scale subresource's status path."""
    ready_replicas: Annotated[int, Field(ge=0)] = 0
    selector: str | None = None
    """The pods' label selector in string form (the scale subresource's selector, for HPA)."""


class RuntimeStatus(ApiModel):
    """What serves the model (KAITO v0.12 reports the runtime in status)."""

    engine: str
    """vllm, transformers, triton, or template (the user's own container)."""
    version: str | None = None
    """The runtime image's tag."""
    quantization: str | None = None


class WorkspaceStatus(ApiModel):
    """What the services observed; each service owns its own conditions."""

    conditions: Conditions = None
    worker_nodes: list[str] | None = None
    worker_nodes_plan_digest: str | None = None
    """The `plan.digest` of the plan the provisioner chose `workerNodes` for; written with them
    and with `ResourceReady`, in one apply. Nodes are the current plan's only when it equals
    `plan.digest` (a re-plan to another SKU must not run on the old SKU's nodes)."""
    surge_replaces: str | None = None
    """kairyu: while an update of a single-node Workspace runs on a spare node, the worker node
    the spare replaces; the provisioner frees it once the new generation serves."""
    state: WorkspaceState | None = None
    target_node_count: Annotated[int | None, Field(ge=0, le=MAX_NODE_COUNT)] = None
    plan: Plan | None = None
    replan_request: ReplanRequest | None = None
    """The provisioner's request to plan again without a SKU the cloud refused (see
    `ReplanRequest`); stale once `plan.digest` differs from its `planDigest`."""
    inference: InferenceStatus | None = None
    runtime: RuntimeStatus | None = None


_ROOT_RULES: list[JsonValue] = [
    cel(
        _exactly_one("inference", "tuning"), "exactly one of inference or tuning must be specified"
    ),
    cel(
        "!has(self.tuning) || !has(self.spec) || !has(self.spec.replicas) "
        "|| self.spec.replicas == 1",
        "spec.replicas (kubectl scale) applies to inference Workspaces; tuning runs one job",
        field_path=".spec.replicas",
    ),
    cel(
        f"self.metadata.name.size() <= 63 && self.metadata.name.matches('{DNS1123_LABEL}')",
        "metadata.name must be a DNS-1123 label (lowercase letters, digits and '-', at most 63)",
    ),
]


class _Workspace(ApiModel):
    """A kaito.sh Workspace: a model to serve (inference) or to tune (tuning) on GPU nodes."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _ROOT_RULES})
    version: ClassVar[str]

    kind: Literal["Workspace"] = "Workspace"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: Annotated[ScaleSpec | None, Field(json_schema_extra={"x-kairyu-default": {}})] = None
    resource: ResourceSpec
    inference: InferenceSpec | None = None
    tuning: TuningSpec | None = None
    status: WorkspaceStatus | None = None

    def nodes_ready(self) -> bool:
        """Whether the provisioner reported Ready nodes for the current generation's plan.

        This is when the deployer and the tuner may run their workload; before, or for an older
        plan, they wait. Three things must name the present: the plan was made for this
        generation, `ResourceReady=True` was decided for this generation (its observedGeneration),
        and the worker nodes were chosen for this very plan (`workerNodesPlanDigest` equals
        `plan.digest`). Without the last two, an edit that re-plans to another SKU would find the
        old SKU's nodes still reported Ready and run the new plan on them.
        """
        status = self.status
        generation = self.metadata.generation
        if status is None or status.plan is None or not status.worker_nodes:
            return False
        plan = status.plan
        if plan.observed_generation != generation or plan.digest is None:
            return False
        if status.worker_nodes_plan_digest != plan.digest:
            return False
        return any(
            c.type == "ResourceReady"
            and c.status == ConditionStatus.TRUE
            and c.observed_generation == generation
            for c in status.conditions or []
        )


class WorkspaceV1Alpha1(_Workspace):
    """A kaito.sh/v1alpha1 Workspace (the API version of the seed's manifests)."""

    version: ClassVar[str] = "v1alpha1"
    api_version: Literal["kaito.sh/v1alpha1"] = "kaito.sh/v1alpha1"


class WorkspaceV1Beta1(_Workspace):
    """A kaito.sh/v1beta1 Workspace (KAITO's storage version)."""

    version: ClassVar[str] = "v1beta1"
    api_version: Literal["kaito.sh/v1beta1"] = "kaito.sh/v1beta1"


Workspace = WorkspaceV1Alpha1 | WorkspaceV1Beta1
"""Either served version; the two share one schema, so an object reads the same in both."""

_EITHER_VERSION: TypeAdapter[Workspace] = TypeAdapter(
    Annotated[WorkspaceV1Alpha1 | WorkspaceV1Beta1, Field(discriminator="api_version")]
)


def parse_workspace(obj: Mapping[str, Any]) -> Workspace:
    """A Workspace object from the apiserver (either version), validated; raises ValidationError."""
    return _EITHER_VERSION.validate_python(obj)
