"""GPU memory arithmetic: does a preset fit on N GPUs of a SKU, and how long a context then fits.

Pure and deliberately simple, so that every plan can be checked by hand (docs/planning.md works
the numbers). All sizes are GiB (2^30 bytes):

    budget per GPU   = GPU memory x utilisation - runtime overhead
    need(len)        = weights + bytes_per_token x len x concurrency / 2^30
    fits on G GPUs   = need(min_len) <= G x budget
    max_len(G)       = (G x budget - weights) x 2^30 / (bytes_per_token x concurrency),
                       rounded down to a multiple of 256, at most the model's token limit

The knobs (utilisation, overhead, minimum context, concurrency) are the planner's settings.
Weights and KV cache are split evenly over the tensor- and pipeline-parallel GPUs; the overhead
(CUDA context, activations, CUDA graphs) is paid on every GPU. The KV cache of models with fewer
KV heads than tensor-parallel ranks is replicated by vLLM; the estimate ignores that, which only
matters for small models that fit with room to spare.
"""

from __future__ import annotations

from kairyu_contracts.catalog import GpuSku, Preset
from kairyu_planner.settings import PlanningSettings

GIB = 1 << 30
LEN_STEP = 256  # vLLM allocates KV cache in blocks; a round number is easier to read


def budget_per_gpu(sku: GpuSku, model: PlanningSettings) -> float:
    """GiB of one GPU available for weights and KV cache."""
    return sku.gpu_memory_gib * model.gpu_memory_utilization - model.overhead_gib


def kv_cache_gib(preset: Preset, length: int, model: PlanningSettings) -> float:
    """KV cache for `concurrency` sequences of `length` tokens."""
    return preset.kv_cache.bytes_per_token * length * model.concurrency / GIB


def min_len(preset: Preset, model: PlanningSettings) -> int:
    return min(preset.token_limit, model.min_model_len)


def need_gib(preset: Preset, length: int, model: PlanningSettings) -> float:
    """GPU memory for weights plus the KV cache of `length` tokens, over all GPUs."""
    return preset.weights_gib + kv_cache_gib(preset, length, model)


def fits(preset: Preset, sku: GpuSku, gpus: int, model: PlanningSettings) -> bool:
    """Whether `gpus` GPUs of `sku` hold the weights and the minimum context."""
    budget = budget_per_gpu(sku, model)
    return budget > 0 and need_gib(preset, min_len(preset, model), model) <= gpus * budget


def max_model_len(preset: Preset, sku: GpuSku, gpus: int, model: PlanningSettings) -> int:
    """Longest context that fits on `gpus` GPUs, at most the token limit (0 if none fits)."""
    room_gib = gpus * budget_per_gpu(sku, model) - preset.weights_gib
    if room_gib <= 0:
        return 0
    tokens = int(room_gib * GIB // (preset.kv_cache.bytes_per_token * model.concurrency))
    if tokens >= preset.token_limit:
        return preset.token_limit
    return tokens // LEN_STEP * LEN_STEP
