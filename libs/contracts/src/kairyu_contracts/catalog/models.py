"""The schema of kairyu's catalog: model presets and GPU node SKUs.

The data lives in YAML beside this module so that a price or a preset can be changed without
touching code; these models check it when it is loaded (a typo in a number fails the unit tests,
not a rollout). Sizes are in GiB (2^30 bytes) throughout, as KAITO states them.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

_KV_BYTES_PER_VALUE = 2  # the KV cache is kept in fp16/bf16
BF16_MIN_COMPUTE_CAPABILITY = 8.0  # Ampere


class Runtime(StrEnum):
    """Inference runtimes a preset can be served with."""

    VLLM = "vllm"
    TRANSFORMERS = "transformers"


class Cloud(StrEnum):
    """Clouds whose GPU SKUs the catalog lists."""

    AZURE = "azure"
    AWS = "aws"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KvCache(_Strict):
    """What one token of context costs in GPU memory.

    `bytes_per_token` is what the estimator uses; when the architecture numbers are given they
    must agree with it (2 for K and V x KV heads x head dim x layers x 2 bytes), which catches a
    mistyped number in the data.
    """

    bytes_per_token: Annotated[int, Field(gt=0)]
    layers: Annotated[int | None, Field(gt=0)] = None
    kv_heads: Annotated[int | None, Field(gt=0)] = None
    head_dim: Annotated[int | None, Field(gt=0)] = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        parts = (self.layers, self.kv_heads, self.head_dim)
        if any(p is not None for p in parts):
            if any(p is None for p in parts):
                raise ValueError("give all of layers, kv_heads and head_dim, or none")
            layers, kv_heads, head_dim = (p or 0 for p in parts)
            expected = 2 * kv_heads * head_dim * layers * _KV_BYTES_PER_VALUE
            if expected != self.bytes_per_token:
                raise ValueError(
                    f"bytes_per_token {self.bytes_per_token} disagrees with the architecture "
                    f"(2 x {kv_heads} x {head_dim} x {layers} x 2 = {expected})"
                )
        return self


class Preset(_Strict):
    """One model preset: where its weights come from and what it needs to run."""

    name: str
    hf_repo: str
    """Hugging Face repository id, passed to the runtime as --model."""
    weights_gib: Annotated[float, Field(gt=0)]
    """Size of the safetensors weights (KAITO's TotalSafeTensorFileSize)."""
    kv_cache: KvCache
    attention_heads: Annotated[int | None, Field(gt=0)] = None
    """Tensor parallelism must divide this (vLLM splits attention heads across GPUs)."""
    token_limit: Annotated[int, Field(gt=0)]
    """Longest context the model supports (KAITO's ModelTokenLimit)."""
    disk_gib: Annotated[int, Field(gt=0)]
    tuning: bool = False
    """Whether LoRA/QLoRA tuning is supported."""
    tuning_gib: Annotated[float | None, Field(gt=0)] = None
    """GPU memory KAITO recommends for LoRA tuning (whole node)."""
    distributed: bool = False
    """Whether inference may span several nodes (pipeline parallelism)."""
    tensor_parallel: bool = True
    """False where the runtime cannot split the model across GPUs (falcon-7b)."""
    lora: bool = True
    """False where vLLM refuses LoRA adapters for this model."""
    download_auth_required: bool = False
    """Gated on Hugging Face: the Workspace must name a modelAccessSecret."""
    quantization: str | None = None
    """The weights' quantization (config.json's quantization_config.quant_method), if any."""
    deprecated: bool = False
    """KAITO deprecated the preset (Falcon, v0.11): served, with a warning on use."""
    revision: str | None = None
    """The repository commit the preset was sized at (models read from the Hub): the runtime
    downloads exactly that one."""
    image: str
    runtime_args: dict[Runtime, list[str]]
    """Model-specific runtime flags, added to the ones the planner derives."""

    @model_validator(mode="after")
    def _tuning_needs_memory(self) -> Self:
        if self.tuning and self.tuning_gib is None:
            raise ValueError(f"{self.name}: a tunable preset needs tuning_gib")
        return self


class CuratedModel(_Strict):
    """One model of KAITO's curated catalog: its size and config.json numbers."""

    repo: str
    weights_gib: Annotated[float, Field(gt=0)]
    architecture: str
    tokens: Annotated[int, Field(gt=0)]
    hidden: Annotated[int, Field(gt=0)]
    layers: Annotated[int, Field(gt=0)]
    heads: Annotated[int, Field(gt=0)]
    kv_heads: Annotated[int, Field(gt=0)]
    head_dim: Annotated[int | None, Field(gt=0)] = None
    kv_lora_rank: Annotated[int | None, Field(gt=0)] = None
    quant_method: str | None = None
    quant_bits: Annotated[int | None, Field(gt=0)] = None
    gated: bool = False
    deprecated: bool = False

    def config(self) -> dict[str, object]:
        """The config.json fields sizing reads."""
        config: dict[str, object] = {
            "architectures": [self.architecture],
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "max_position_embeddings": self.tokens,
        }
        if self.head_dim is not None:
            config["head_dim"] = self.head_dim
        if self.kv_lora_rank is not None:
            config["kv_lora_rank"] = self.kv_lora_rank
        if self.quant_method is not None:
            config["quantization_config"] = {"quant_method": self.quant_method}
        return config


class CuratedFile(_Strict):
    kind: Literal["curated"]
    legacy: dict[str, str] = Field(default_factory=dict)
    """KAITO's legacy preset names, each to the repository it serves."""
    models: list[CuratedModel]


class Price(_Strict):
    """An hourly on-demand list price and where it was read."""

    usd_per_hour: Annotated[float, Field(gt=0)]
    region: str
    source: str
    """Key into the catalog's price sources."""


class PriceSource(_Strict):
    """A citable price list."""

    description: str
    url: str
    as_of: date
    """When the prices were captured."""


class GpuSku(_Strict):
    """A GPU node type one cloud sells."""

    name: str
    cloud: Cloud
    gpu_model: str
    gpu_count: Annotated[int, Field(gt=0)]
    gpu_memory_gib: Annotated[float, Field(gt=0)]
    """Memory of one GPU."""
    compute_capability: Annotated[float, Field(gt=0)]
    """CUDA compute capability; bfloat16 needs 8.0 or newer."""
    nvlink: bool = False
    nvme: bool = False
    price: Price | None = None
    """None where no cited list price exists; such a SKU is used only when named."""

    @property
    def bf16(self) -> bool:
        return self.compute_capability >= BF16_MIN_COMPUTE_CAPABILITY


class PresetFile(_Strict):
    kind: Literal["presets"]
    sources: list[str]
    base_image: str
    """The runtime image of models that have no preset (any Hugging Face id)."""
    presets: list[Preset]
    x_args: dict[str, object] | None = Field(default=None, alias="x-args")
    """YAML anchors shared by several presets; not read directly."""


class SkuFile(_Strict):
    kind: Literal["gpu-skus"]
    price_sources: dict[str, PriceSource]
    skus: list[GpuSku]

    @model_validator(mode="after")
    def _known_sources(self) -> Self:
        for sku in self.skus:
            if sku.price is not None and sku.price.source not in self.price_sources:
                raise ValueError(f"{sku.name}: unknown price source {sku.price.source!r}")
        return self
