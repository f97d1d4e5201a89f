"""A preset for any Hugging Face model, from its own config.json and weight files (pure).

KAITO (since v0.9) serves a model named by its Hugging Face id, sized from what the Hub says
about it. The planner reads the repository's `config.json` and its safetensors files' sizes and
turns them into the same `Preset` the curated catalog holds, so that one estimator plans both:

    weights          = total size of the *.safetensors files
    KV cache / token = 2 (K and V) x KV heads x head dim x layers x 2 bytes
                       or, for multi-head latent attention (a kv_lora_rank in the config),
                       layers x (kv_lora_rank + qk_rope_head_dim) x 2 bytes
    token limit      = max_position_embeddings

Multimodal configs keep the language model's numbers under `text_config`. Every layer is
counted as an attention layer, which overestimates hybrid (Mamba) models: the plan stays on the
safe side. A config that lacks what the arithmetic needs raises `SizingError` naming the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from kairyu_contracts.catalog.models import KvCache, Preset, Runtime

GIB = 1 << 30
_KV_BYTES = 2  # the KV cache is kept in 16-bit
_DEFAULT_ROPE_DIM = 64  # DeepSeek's qk_rope_head_dim when a config leaves it out
HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
"""`org/model`: what the Hub accepts as a model repository id."""
_ARCHITECTURE = re.compile(r"^[A-Za-z0-9_]+$")


class SizingError(Exception):
    """The model's metadata does not say what sizing it needs; the message says what is missing."""


def is_hf_id(name: str) -> bool:
    """Whether a preset name is a Hugging Face repository id (`org/model`)."""
    return bool(HF_ID.match(name)) and ".." not in name


def served_name(repo: str) -> str:
    """The name clients ask for: the repository's last path segment, lower-cased (KAITO v0.11)."""
    return repo.rsplit("/", 1)[-1].lower()


def weights_bytes(files: Iterable[tuple[str, int | None]]) -> int:
    """Total size of the safetensors weights among a repository's (file name, size) pairs."""
    total = 0
    for name, size in files:
        if name.endswith(".safetensors") and "/" not in name:
            if size is None:
                raise SizingError(f"the Hub gave no size for {name}")
            total += size
    if total == 0:
        raise SizingError("the repository has no *.safetensors weights at its top level")
    return total


def _int(config: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _need(config: Mapping[str, Any], what: str, *keys: str) -> int:
    value = _int(config, *keys)
    if value is None:
        raise SizingError(f"config.json has no {what} ({' or '.join(keys)})")
    return value


def architecture(config: Mapping[str, Any]) -> str:
    """The model class config.json names (what vLLM loads), or SizingError."""
    names = config.get("architectures")
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        raise SizingError("config.json names no architecture (architectures)")
    if not _ARCHITECTURE.match(names[0]):
        raise SizingError(f"config.json names an unreadable architecture {names[0][:64]!r}")
    return names[0]


def kv_cache(config: Mapping[str, Any]) -> KvCache:
    """What one token of context costs, from the language model's config."""
    text = config.get("text_config")
    numbers: Mapping[str, Any] = text if isinstance(text, Mapping) else config
    layers = _need(numbers, "layer count", "num_hidden_layers", "n_layer", "num_layers")
    rank = _int(numbers, "kv_lora_rank")
    if rank is not None:
        rope = _int(numbers, "qk_rope_head_dim") or _DEFAULT_ROPE_DIM
        return KvCache(bytes_per_token=layers * (rank + rope) * _KV_BYTES)
    heads = _need(numbers, "attention head count", "num_attention_heads", "n_head")
    kv_heads = _int(numbers, "num_key_value_heads", "num_kv_heads") or heads
    head_dim = _int(numbers, "head_dim")
    if head_dim is None:
        hidden = _need(numbers, "hidden size", "hidden_size", "n_embd", "d_model")
        head_dim = hidden // heads
    per_token = 2 * kv_heads * head_dim * layers * _KV_BYTES
    return KvCache(bytes_per_token=per_token, layers=layers, kv_heads=kv_heads, head_dim=head_dim)


def quantization(config: Mapping[str, Any]) -> str | None:
    found = config.get("quantization_config")
    method = found.get("quant_method") if isinstance(found, Mapping) else None
    return str(method)[:64] if method else None


def preset_from_config(
    repo: str,
    config: Mapping[str, Any],
    weights: int,
    *,
    image: str,
    gated: bool = False,
    revision: str | None = None,
    deprecated: bool = False,
) -> Preset:
    """The preset of the Hugging Face model `repo`, from its config.json and weights' bytes."""
    architecture(config)
    text = config.get("text_config")
    numbers: Mapping[str, Any] = text if isinstance(text, Mapping) else config
    tokens = _int(numbers, "max_position_embeddings", "n_positions", "max_seq_len")
    if tokens is None:
        tokens = _int(config, "max_position_embeddings")
    if tokens is None:
        raise SizingError("config.json has no context length (max_position_embeddings)")
    weights_gib = weights / GIB
    return Preset(
        name=served_name(repo),
        hf_repo=repo,
        weights_gib=round(weights_gib, 2) or 0.01,
        kv_cache=kv_cache(config),
        attention_heads=_int(numbers, "num_attention_heads", "n_head"),
        token_limit=tokens,
        disk_gib=max(80, math.ceil(weights_gib * 2)),
        distributed=True,
        download_auth_required=gated,
        deprecated=deprecated,
        quantization=quantization(config),
        revision=revision,
        image=image,
        runtime_args={Runtime.VLLM: [], Runtime.TRANSFORMERS: ["--pipeline=text-generation"]},
    )
