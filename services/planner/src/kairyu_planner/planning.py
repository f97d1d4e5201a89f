"""Turn a Workspace into a plan: which SKU, how many nodes, how the runtime is sized, and why.

Pure: the planner service, the admission webhook's resource checks and `kairyu plan` all call
`plan_workspace`. A spec that cannot be planned raises `PlanError` with a condition reason and a
message that names the shortfall; nothing is published downstream for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from kairyu_contracts.api import Plan, Workspace
from kairyu_contracts.catalog import Catalog, GpuSku, Preset, Runtime
from kairyu_contracts.catalog.sizing import is_hf_id, served_name
from kairyu_contracts.labels import BYPASS_RESOURCE_CHECKS_ANNOTATION, RUNTIME_ANNOTATION
from kairyu_planner import estimator
from kairyu_planner.settings import PlanningSettings

QLORA_WEIGHT_SHARE = 0.25  # 4-bit weights are a quarter of the 16-bit ones


class PlanReason(StrEnum):
    """Reasons of the Planned condition."""

    PLAN_CREATED = "PlanCreated"
    UNKNOWN_PRESET = "UnknownPreset"
    MODEL_UNREADABLE = "ModelMetadataUnreadable"
    """A Hugging Face model whose architecture or size cannot be read from the Hub."""
    HUB_UNAVAILABLE = "HubUnavailable"
    """The Hub could not be asked about a Hugging Face model; the planner asks again."""
    UNSUPPORTED_INSTANCE_TYPE = "UnsupportedInstanceType"
    INSUFFICIENT_GPU_MEMORY = "InsufficientGPUMemory"
    NO_SUITABLE_SKU = "NoSuitableSKU"
    TUNING_NOT_SUPPORTED = "TuningNotSupported"
    MULTI_NODE_NOT_SUPPORTED = "MultiNodeNotSupported"
    INSTANCE_TYPE_REQUIRED = "InstanceTypeRequired"
    INVALID_SPEC = "InvalidSpec"
    """KAITO's semantic rules refuse the spec (the webhook would have, had it been installed)."""
    NODE_LIMIT_EXCEEDED = "NodeLimitExceeded"
    """The plan would use more nodes than KAIRYU_PLANNING__MAX_NODES allows."""
    COST_LIMIT_EXCEEDED = "CostLimitExceeded"
    """The plan would cost more per hour than KAIRYU_PLANNING__MAX_COST_PER_HOUR allows."""
    REPLICAS_NOT_SUPPORTED = "ReplicasNotSupported"
    """spec.replicas above 1 for a model that spans several nodes."""
    NO_MATCHING_NODES = "NoMatchingNodes"
    """Bring-your-own nodes: none matches the Workspace's labelSelector (yet)."""
    GPU_LABELS_MISSING = "GPULabelsMissing"
    """Bring-your-own nodes without the GPU Feature Discovery labels kairyu sizes them from."""
    NODES_NOT_UNIFORM = "NodesNotUniform"
    """Bring-your-own nodes matching the selector differ in their GPUs."""


class PlanError(Exception):
    """The Workspace cannot be planned; `reason` goes to the Planned condition."""

    def __init__(self, reason: PlanReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Shape:
    """How a preset is laid out on one SKU."""

    sku: GpuSku
    nodes: int
    tensor_parallel: int
    max_model_len: int | None

    @property
    def cost_per_hour(self) -> float | None:
        return None if self.sku.price is None else self.sku.price.usd_per_hour * self.nodes


def runtime_of(ws: Workspace) -> str:
    """The runtime a Workspace asks for; triton serves through vLLM and is sized like it."""
    return (ws.metadata.annotations or {}).get(RUNTIME_ANNOTATION, "vllm")


def bypasses_resource_checks(ws: Workspace) -> bool:
    annotations = ws.metadata.annotations or {}
    return annotations.get(BYPASS_RESOURCE_CHECKS_ANNOTATION, "").lower() == "true"


def dtype_for(sku: GpuSku) -> str:
    return "bfloat16" if sku.bf16 else "float16"


def tensor_parallel_size(preset: Preset, sku: GpuSku) -> int:
    """All GPUs of the node, halved until it divides the attention heads (vLLM's requirement)."""
    if not preset.tensor_parallel:
        return 1
    size = sku.gpu_count
    heads = preset.attention_heads
    while heads is not None and size > 1 and heads % size:
        size //= 2
    return size


def supported_skus(catalog: Catalog, settings: PlanningSettings) -> list[str]:
    return sorted(s.name for s in catalog.skus_of(settings.cloud))


def resolve_sku(name: str, catalog: Catalog, settings: PlanningSettings) -> GpuSku:
    sku = catalog.sku(name)
    if sku is None or sku.cloud != settings.cloud:
        where = "" if sku is None else f" (a {sku.cloud.value} SKU; this planner plans for "
        where += "" if sku is None else f"{settings.cloud.value})"
        raise PlanError(
            PlanReason.UNSUPPORTED_INSTANCE_TYPE,
            f"Unsupported instance type {name}{where}. "
            f"Supported SKUs: {', '.join(supported_skus(catalog, settings))}",
        )
    return sku


def resolve_preset(name: str, catalog: Catalog) -> Preset:
    preset = catalog.preset(name)
    if preset is None:
        hint = " or a Hugging Face model id (org/model)" if not is_hf_id(name) else ""
        raise PlanError(
            PlanReason.UNKNOWN_PRESET,
            f"Unknown preset {name}: name a model of kairyu's catalog{hint} "
            f"({', '.join(sorted(catalog.presets))})",
        )
    return preset


def _describe_node(sku: GpuSku, gpus: int, model: PlanningSettings) -> str:
    return (
        f"{gpus} x {sku.gpu_memory_gib:g} GiB {sku.gpu_model} at "
        f"{model.gpu_memory_utilization:.0%} minus {model.overhead_gib:g} GiB runtime overhead"
    )


def shape_for(preset: Preset, sku: GpuSku, runtime: str, settings: PlanningSettings) -> Shape:
    """The smallest layout of `preset` on `sku`, or PlanError naming the shortfall."""
    length = estimator.min_len(preset, settings)
    need = estimator.need_gib(preset, length, settings)
    budget = estimator.budget_per_gpu(sku, settings)
    what = (
        f"{preset.name} needs {need:.1f} GiB of GPU memory ({preset.weights_gib:g} GiB weights + "
        f"{estimator.kv_cache_gib(preset, length, settings):.1f} GiB KV cache for {length} tokens)"
    )
    if budget <= 0:
        raise PlanError(
            PlanReason.INSUFFICIENT_GPU_MEMORY,
            f"{what}; one {sku.gpu_model} of {sku.gpu_memory_gib:g} GiB leaves nothing after the "
            f"{settings.overhead_gib:g} GiB runtime overhead",
        )
    if runtime == Runtime.TRANSFORMERS:
        if estimator.fits(preset, sku, sku.gpu_count, settings):
            return Shape(sku=sku, nodes=1, tensor_parallel=1, max_model_len=None)
        reason, extra = PlanReason.INSUFFICIENT_GPU_MEMORY, ""
        if preset.distributed:
            reason = PlanReason.MULTI_NODE_NOT_SUPPORTED
            extra = "; Multi-node distributed inference is not supported with Huggingface "
            extra += "Transformers runtime"
        node = sku.gpu_count * budget
        raise PlanError(
            reason,
            f"{what}; one {sku.name} node offers {node:.1f} GiB "
            f"({_describe_node(sku, sku.gpu_count, settings)}){extra}",
        )
    tp = tensor_parallel_size(preset, sku)
    node_limit = settings.max_nodes if preset.distributed else 1
    for nodes in range(1, node_limit + 1):
        if estimator.fits(preset, sku, tp * nodes, settings):
            return Shape(
                sku=sku,
                nodes=nodes,
                tensor_parallel=tp,
                max_model_len=estimator.max_model_len(preset, sku, tp * nodes, settings),
            )
    node = tp * budget
    offered = f"one {sku.name} node offers {node:.1f} GiB ({_describe_node(sku, tp, settings)})"
    needed_nodes = math.ceil(need / node)
    if not preset.distributed:
        raise PlanError(
            PlanReason.INSUFFICIENT_GPU_MEMORY,
            f"{what}; {offered}: {need - node:.1f} GiB short, and {preset.name} cannot span "
            f"several nodes",
        )
    raise PlanError(
        PlanReason.INSUFFICIENT_GPU_MEMORY,
        f"{what}; {offered}, so it would take {needed_nodes} nodes, more than the limit of "
        f"{settings.max_nodes} (KAIRYU_PLANNING__MAX_NODES): "
        f"{need - node_limit * node:.1f} GiB short on {node_limit} nodes",
    )


def _rank(shape: Shape) -> tuple[float, int, float, str]:
    """Cheapest first; then fewer nodes; then the newer GPU."""
    cost = shape.cost_per_hour
    return (
        math.inf if cost is None else round(cost, 4),
        shape.nodes,
        -shape.sku.compute_capability,
        shape.sku.name,
    )


def candidates(
    catalog: Catalog, settings: PlanningSettings, exclude: frozenset[str] = frozenset()
) -> list[GpuSku]:
    """SKUs the planner may choose on its own: priced, of the cloud, allowed, not excluded."""
    allowed = {s.lower() for s in settings.allowed_skus} if settings.allowed_skus else None
    excluded = {s.lower() for s in exclude}
    return [
        s
        for s in catalog.skus_of(settings.cloud)
        if s.price is not None
        and (allowed is None or s.name.lower() in allowed)
        and s.name.lower() not in excluded
    ]


def cheapest_shape(
    preset: Preset,
    runtime: str,
    catalog: Catalog,
    settings: PlanningSettings,
    exclude: frozenset[str] = frozenset(),
) -> tuple[Shape, list[Shape]]:
    """The cheapest layout over the allowed SKUs, and the others that fit (ranked)."""
    fitting: list[Shape] = []
    refusals: dict[str, str] = {}
    skus = candidates(catalog, settings, exclude)
    for sku in skus:
        try:
            fitting.append(shape_for(preset, sku, runtime, settings))
        except PlanError as exc:
            refusals[sku.name] = exc.message
    if not fitting:
        if not skus:
            unavailable = f"; unavailable: {', '.join(sorted(exclude))}" if exclude else ""
            raise PlanError(
                PlanReason.NO_SUITABLE_SKU,
                f"no priced {settings.cloud.value} SKU is allowed "
                f"(KAIRYU_PLANNING__ALLOWED_SKUS){unavailable}; name resource.instanceType",
            )
        biggest = max(skus, key=lambda s: s.gpu_count * s.gpu_memory_gib)
        detail = refusals[biggest.name]
        unavailable = f" (unavailable: {', '.join(sorted(exclude))})" if exclude else ""
        raise PlanError(
            PlanReason.NO_SUITABLE_SKU,
            f"none of the {len(skus)} allowed {settings.cloud.value} SKUs{unavailable} fits; "
            f"the largest, {biggest.name}: {detail}",
        )
    fitting.sort(key=_rank)
    return fitting[0], fitting[1:]


def _money(value: float | None) -> str:
    return "no list price" if value is None else f"${value:.2f}/h"


def _vllm_args(
    preset: Preset, shape: Shape, dtype: str, settings: PlanningSettings, lora: bool
) -> list[str]:
    args = [
        f"--model={preset.hf_repo}",
        f"--served-model-name={served_name(preset.hf_repo)}",
        f"--dtype={dtype}",
        f"--gpu-memory-utilization={settings.gpu_memory_utilization:g}",
        f"--tensor-parallel-size={shape.tensor_parallel}",
    ]
    if shape.max_model_len:
        args.append(f"--max-model-len={shape.max_model_len}")
    if shape.nodes > 1:
        args += [f"--pipeline-parallel-size={shape.nodes}", "--distributed-executor-backend=ray"]
    if preset.revision:
        args.append(f"--revision={preset.revision}")
    if lora:
        args.append("--enable-lora")
    return args + list(preset.runtime_args.get(Runtime.VLLM, []))


def _transformers_args(preset: Preset, dtype: str) -> list[str]:
    return [
        f"--pretrained_model_name_or_path={preset.hf_repo}",
        # Presets name hub repositories; the runtime refuses to download unless told to (KAITO
        # passes this flag for every download-at-runtime model).
        "--allow_remote_files",
        f"--served_model_name={served_name(preset.hf_repo)}",
        f"--torch_dtype={dtype}",
        *([f"--revision={preset.revision}"] if preset.revision else []),
        *preset.runtime_args.get(Runtime.TRANSFORMERS, []),
    ]


def _explain(preset: Preset, shape: Shape, dtype: str, settings: PlanningSettings) -> list[str]:
    sku = shape.sku
    parts = [
        f"{shape.nodes} x {sku.name} ({sku.gpu_count} x {sku.gpu_memory_gib:g} GiB "
        f"{sku.gpu_model}), TP {shape.tensor_parallel}, PP {shape.nodes}"
    ]
    if dtype == "float16":
        parts.append(
            f"float16 because {sku.gpu_model} (compute capability {sku.compute_capability:.1f}) "
            f"has no bfloat16"
        )
    if shape.max_model_len is not None and shape.max_model_len < preset.token_limit:
        parts.append(
            f"max-model-len clamped to {shape.max_model_len} of the model's "
            f"{preset.token_limit} tokens so the KV cache for {settings.concurrency} "
            f"sequence(s) fits"
        )
    return parts


def plan_workspace(
    ws: Workspace,
    catalog: Catalog,
    settings: PlanningSettings,
    exclude: frozenset[str] = frozenset(),
    byo: GpuSku | None = None,
) -> PlanResult:
    """The plan for `ws`, or PlanError.

    `exclude`: SKUs the cloud refused, never chosen again (a SKU the Workspace names is used
    regardless: the user asked for it). `byo`: what the user's own nodes offer
    (kairyu_planner.byonodes), used when the Workspace names no instance type.
    """
    byo = byo if not ws.resource.instance_type else None
    result = _plan(ws, catalog, settings, exclude, byo)
    check_limits(result.plan, settings, owned=byo is not None)
    if exclude:
        result.plan.excluded_instance_types = sorted(exclude)
    return result


def check_limits(plan: Plan, settings: PlanningSettings, *, owned: bool = False) -> None:
    """The admin's ceilings, which no annotation waives: nodes per Workspace and cost per hour.

    `owned`: the plan runs on the user's own nodes, which have no price to hold to a ceiling.
    """
    if plan.node_count > settings.max_nodes:
        raise PlanError(
            PlanReason.NODE_LIMIT_EXCEEDED,
            f"the plan needs {plan.node_count} x {plan.instance_type}, more than the limit of "
            f"{settings.max_nodes} nodes per Workspace (KAIRYU_PLANNING__MAX_NODES)",
        )
    ceiling = settings.max_cost_per_hour
    if ceiling is None or owned:
        return
    if plan.estimated_cost_per_hour is None:
        raise PlanError(
            PlanReason.COST_LIMIT_EXCEEDED,
            f"{plan.instance_type} has no list price in kairyu's catalog, so the plan cannot be "
            f"held to the ceiling of ${ceiling:.2f}/h (KAIRYU_PLANNING__MAX_COST_PER_HOUR)",
        )
    cost = float(plan.estimated_cost_per_hour)
    if cost > ceiling:
        raise PlanError(
            PlanReason.COST_LIMIT_EXCEEDED,
            f"the plan ({plan.node_count} x {plan.instance_type}) costs ${cost:.2f}/h at list "
            f"price, more than the ceiling of ${ceiling:.2f}/h per Workspace "
            f"(KAIRYU_PLANNING__MAX_COST_PER_HOUR)",
        )


def _named(
    ws: Workspace, catalog: Catalog, settings: PlanningSettings, byo: GpuSku | None
) -> tuple[GpuSku, str] | None:
    """The SKU the Workspace runs on whatever fits, and why: named, or the user's nodes."""
    if byo is not None:
        what = f"{byo.gpu_count} x {byo.gpu_model} ({byo.gpu_memory_gib:g} GiB)"
        return byo, f"your nodes matching resource.labelSelector: {byo.name}, {what} each"
    if ws.resource.instance_type:
        sku = resolve_sku(ws.resource.instance_type, catalog, settings)
        return sku, f"{sku.name} as named in resource.instanceType"
    return None


def _plan(
    ws: Workspace,
    catalog: Catalog,
    settings: PlanningSettings,
    exclude: frozenset[str],
    byo: GpuSku | None,
) -> PlanResult:
    if ws.tuning is not None:
        return _plan_tuning(ws, catalog, settings, exclude, byo)
    if ws.inference is None:  # the CRD requires exactly one of inference or tuning
        raise PlanError(PlanReason.UNKNOWN_PRESET, "the Workspace has neither inference nor tuning")
    if ws.inference.preset is None:
        return _plan_template(ws, catalog, settings, byo)
    preset = resolve_preset(ws.inference.preset.name, catalog)
    runtime = runtime_of(ws)
    warnings: list[str] = []
    named = _named(ws, catalog, settings, byo)
    if named:
        sku, choice = named
        try:
            shape = shape_for(preset, sku, runtime, settings)
        except PlanError as exc:
            if not bypasses_resource_checks(ws):
                raise
            warnings.append(f"{exc.message} (ignored: {BYPASS_RESOURCE_CHECKS_ANNOTATION})")
            shape = Shape(
                sku=sku, nodes=ws.resource.count or 1, tensor_parallel=1, max_model_len=None
            )
    else:
        shape, others = cheapest_shape(preset, runtime, catalog, settings, exclude)
        choice = f"cheapest of {len(others) + 1} allowed SKUs that fit: {shape.sku.name} at "
        choice += _money(shape.cost_per_hour)
        if others:
            choice += f" (next: {others[0].nodes} x {others[0].sku.name} at "
            choice += f"{_money(others[0].cost_per_hour)})"
        if exclude:
            choice += f"; skipped as unavailable: {', '.join(sorted(exclude))}"
    replicas = _replicas(ws, shape.nodes, preset.name)
    if replicas > 1:
        choice += f"; {replicas} replicas of {shape.nodes} node each"
    dtype = dtype_for(shape.sku)
    lora = bool(ws.inference.adapters) and preset.lora
    if runtime == Runtime.TRANSFORMERS:
        args = _transformers_args(preset, dtype)
    else:
        args = _vllm_args(preset, shape, dtype, settings, lora)
    reason = "; ".join([choice, *_explain(preset, shape, dtype, settings)])
    cost = shape.cost_per_hour
    plan = Plan(
        instance_type=shape.sku.name,
        node_count=shape.nodes * replicas,
        replicas=replicas,
        gpus_per_node=shape.sku.gpu_count,
        tensor_parallel_size=shape.tensor_parallel,
        pipeline_parallel_size=shape.nodes if runtime != Runtime.TRANSFORMERS else 1,
        dtype=dtype,
        runtime=runtime,
        max_model_len=shape.max_model_len,
        runtime_args=args,
        model=preset.hf_repo,
        model_revision=preset.revision,
        weights_gib=preset.weights_gib,
        disk_gib=preset.disk_gib,
        quantization=preset.quantization,
        estimated_cost_per_hour=_cost(None if cost is None else cost * replicas),
        reason=reason,
        observed_generation=ws.metadata.generation,
    )
    return PlanResult(plan=plan, warnings=warnings)


def _replicas(ws: Workspace, nodes_each: int, what: str) -> int:
    """spec.replicas (1 when unset); several only of a model that fits one node."""
    replicas = (ws.spec.replicas if ws.spec else None) or 1
    if replicas > 1 and nodes_each > 1:
        raise PlanError(
            PlanReason.REPLICAS_NOT_SUPPORTED,
            f"spec.replicas is {replicas}, but {what} spans {nodes_each} nodes; replicas "
            f"are supported for models that fit one node (use an InferenceSet for more)",
        )
    return replicas


def _cost(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def _tuning_fits(preset: Preset, sku: GpuSku, method: str, model: PlanningSettings) -> bool:
    share = QLORA_WEIGHT_SHARE if method == "qlora" else 1.0
    per_gpu = preset.weights_gib * share / sku.gpu_count
    return per_gpu <= estimator.budget_per_gpu(sku, model)


def _plan_tuning(
    ws: Workspace,
    catalog: Catalog,
    settings: PlanningSettings,
    exclude: frozenset[str],
    byo: GpuSku | None,
) -> PlanResult:
    tuning = ws.tuning
    if tuning is None:
        raise PlanError(PlanReason.TUNING_NOT_SUPPORTED, "the Workspace has no tuning section")
    preset = resolve_preset(tuning.preset.name, catalog)
    if not preset.tuning or preset.tuning_gib is None:
        raise PlanError(
            PlanReason.TUNING_NOT_SUPPORTED,
            f"preset {preset.name} does not support tuning; tunable presets: "
            f"{', '.join(sorted(p.name for p in catalog.presets.values() if p.tuning))}",
        )
    method = tuning.method.lower()
    warnings: list[str] = []
    named = _named(ws, catalog, settings, byo)
    if named:
        sku, choice = named
        if not _tuning_fits(preset, sku, method, settings):
            message = (
                f"{method} tuning of {preset.name} must at least load its weights "
                f"({preset.weights_gib:g} GiB at 16 bit, a quarter of that for qlora); one "
                f"{sku.name} node offers "
                f"{sku.gpu_count * estimator.budget_per_gpu(sku, settings):.1f} GiB"
            )
            if not bypasses_resource_checks(ws):
                raise PlanError(PlanReason.INSUFFICIENT_GPU_MEMORY, message)
            warnings.append(f"{message} (ignored: {BYPASS_RESOURCE_CHECKS_ANNOTATION})")
        total = sku.gpu_count * sku.gpu_memory_gib
        if total < preset.tuning_gib:
            warnings.append(
                f"KAITO recommends {preset.tuning_gib:g} GiB of GPU memory to tune {preset.name}; "
                f"{sku.name} has {total:g} GiB, so training may run out of memory"
            )
    else:
        fitting = [
            s
            for s in candidates(catalog, settings, exclude)
            if s.gpu_count * s.gpu_memory_gib >= preset.tuning_gib
        ]
        if not fitting:
            raise PlanError(
                PlanReason.NO_SUITABLE_SKU,
                f"no allowed SKU has the {preset.tuning_gib:g} GiB of GPU memory KAITO "
                f"recommends for tuning {preset.name}",
            )
        sku = min(fitting, key=lambda s: _rank(Shape(s, 1, 1, None)))
        choice = (
            f"cheapest allowed SKU with the {preset.tuning_gib:g} GiB KAITO recommends for "
            f"tuning: {sku.name} at {_money(sku.price.usd_per_hour if sku.price else None)}"
        )
    dtype = dtype_for(sku)
    plan = Plan(
        instance_type=sku.name,
        node_count=1,
        gpus_per_node=sku.gpu_count,
        tensor_parallel_size=1,
        pipeline_parallel_size=1,
        dtype=dtype,
        runtime=Runtime.TRANSFORMERS.value,
        estimated_cost_per_hour=_cost(sku.price.usd_per_hour if sku.price else None),
        reason=f"{choice}; {method} tuning on one node in {dtype}",
        observed_generation=ws.metadata.generation,
    )
    return PlanResult(plan=plan, warnings=warnings)


def _plan_template(
    ws: Workspace, catalog: Catalog, settings: PlanningSettings, byo: GpuSku | None
) -> PlanResult:
    named = _named(ws, catalog, settings, byo)
    if named is None:
        raise PlanError(
            PlanReason.INSTANCE_TYPE_REQUIRED,
            "an inference template runs a custom workload kairyu cannot size: name "
            "resource.instanceType",
        )
    sku = named[0]
    each = ws.resource.count or 1
    replicas = _replicas(ws, each, "the template")
    nodes = each * replicas
    cost = None if sku.price is None else sku.price.usd_per_hour * nodes
    plan = Plan(
        instance_type=sku.name,
        node_count=nodes,
        replicas=replicas,
        gpus_per_node=sku.gpu_count,
        tensor_parallel_size=1,
        pipeline_parallel_size=1,
        dtype="auto",
        runtime="template",
        estimated_cost_per_hour=_cost(cost),
        reason=f"{nodes} x {sku.name} {'of your nodes' if byo else 'as named'}"
        + (f" ({replicas} replicas)" if replicas > 1 else "")
        + "; the template's own container is run unchanged",
        observed_generation=ws.metadata.generation,
    )
    return PlanResult(plan=plan)
