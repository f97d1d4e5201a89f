"""From each API's sampling parameters to transformers' `generate()` keyword arguments.

The three APIs name the same knobs differently (OpenAI `max_tokens`, vLLM/Triton
`sampling_parameters`, KAITO's `generate_kwargs`). They meet here as one `GenerateRequest` so the
engine has a single way to run, and these mappings stay pure and testable without a model.

Nothing a request says reaches `generate()` unless it is on GENERATE_ALLOWED: `generate()` also
takes arguments that load and run code from a model hub (`custom_generate` with
`trust_remote_code`, the deprecated decoding modes that moved to hub repositories), a second
model, or callables; one JSON key must not be able to run code in the pod.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

GREEDY_BELOW = 1e-5
# transformers' StopStringCriteria precomputes a table over the whole vocabulary for each
# position of each stop string; a stop string the size of a book would be a request-time DoS.
MAX_STOP_CHARS = 256
# torch.manual_seed takes a 64-bit seed; a larger one is an OverflowError, not a 400.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
# Token ids across bad_words_ids, suppress_tokens, eos_token_id and the like, all together.
MAX_TOKEN_IDS = 4096

# The generate() arguments a request may set: KAITO's documented generate_kwargs and the
# length, sampling and penalty options transformers documents for GenerationConfig. Group beam
# search, constraints, contrastive search and DoLa are left out on purpose: transformers 5 runs
# them from hub repositories (`transformers-community/*`).
GENERATE_ALLOWED = frozenset(
    {
        # length
        "max_length",
        "max_new_tokens",
        "min_length",
        "min_new_tokens",
        "early_stopping",
        "max_time",
        # strategy and sampling
        "do_sample",
        "num_beams",
        "num_return_sequences",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "typical_p",
        "epsilon_cutoff",
        "eta_cutoff",
        # penalties and token rules
        "repetition_penalty",
        "length_penalty",
        "no_repeat_ngram_size",
        "bad_words_ids",
        "suppress_tokens",
        "begin_suppress_tokens",
        "renormalize_logits",
        "remove_invalid_values",
        # special tokens
        "pad_token_id",
        "eos_token_id",
        "forced_bos_token_id",
        "forced_eos_token_id",
    }
)
# Refused even if someone adds them to GENERATE_ALLOWED: each loads or runs code (a hub
# repository, a second model, a callable) or takes over the server's own plumbing.
_NEVER = frozenset(
    {
        "custom_generate",
        "trust_remote_code",
        "streamer",
        "generation_config",
        "logits_processor",
        "stopping_criteria",
        "prefix_allowed_tokens_fn",
        "synced_gpus",
        "tokenizer",
        "negative_prompt_ids",
        "negative_prompt_attention_mask",
        "use_model_defaults",
        "watermarking_config",
        "compile_config",
        "cache_implementation",
        "cache_config",
        "past_key_values",
    }
)
TOKEN_ID_KWARGS = (
    "pad_token_id",
    "eos_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "bad_words_ids",
    "suppress_tokens",
    "begin_suppress_tokens",
)


class RequestError(ValueError):
    """A request the model cannot run as asked; the APIs answer it with a 4xx and this message."""


@dataclass
class GenerateRequest:
    prompt: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # Whether the caller chose the length; a default may be shortened to fit the context.
    explicit_length: bool = False


@dataclass(frozen=True)
class GenerationLimits:
    """What one generation may ask for (RuntimeSettings' max_num_beams and friends)."""

    max_num_beams: int = 4
    max_num_return_sequences: int = 1


def never_passed(key: str) -> bool:
    """The deny check under the allow-list: code loaders, second models, callables."""
    return key in _NEVER or key.endswith("_model") or key.startswith("assistant_")


def check_generate_kwargs(kwargs: dict[str, Any], limits: GenerationLimits) -> None:
    """Refuses (RequestError naming it) any key not allowed, and work beyond the limits."""
    for key in sorted(kwargs):
        if never_passed(key):
            raise RequestError(f"generate_kwargs.{key} is not accepted by this server")
        if key not in GENERATE_ALLOWED:
            raise RequestError(
                f"generate_kwargs.{key} is not supported; supported: "
                + ", ".join(sorted(GENERATE_ALLOWED))
            )
    beams = kwargs.get("num_beams") or 1
    if beams > limits.max_num_beams:
        raise RequestError(f"num_beams {beams} is above this server's limit {limits.max_num_beams}")
    sequences = kwargs.get("num_return_sequences") or 1
    if sequences > limits.max_num_return_sequences:
        raise RequestError(
            f"num_return_sequences {sequences} is above this server's limit "
            f"{limits.max_num_return_sequences}"
        )


def check_token_ids(kwargs: dict[str, Any], vocabulary: int) -> None:
    """Token ids a request names must exist (else an IndexError), and not too many of them.

    transformers checks every banned word, suppressed token and end-of-sequence id at every
    generated token, so their total is capped, whatever the lists' shape.
    """
    counts = {key: len(_ints(kwargs.get(key))) for key in TOKEN_ID_KWARGS}
    if sum(counts.values()) > MAX_TOKEN_IDS:
        largest = max(counts, key=lambda k: counts[k])
        raise RequestError(
            f"generate_kwargs.{largest}: {counts[largest]} token ids "
            f"({sum(counts.values())} in all of {', '.join(TOKEN_ID_KWARGS)}); "
            f"at most {MAX_TOKEN_IDS} in all"
        )
    for key in TOKEN_ID_KWARGS:
        for token in _ints(kwargs.get(key)):
            if not 0 <= token < vocabulary:
                raise RequestError(
                    f"{key}: token id {token} is outside the vocabulary (0..{vocabulary - 1})"
                )


def _ints(value: Any) -> list[int]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list | tuple):
        return [i for item in value for i in _ints(item)]
    return []


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if len(stops) > 4:  # noqa: PLR2004 - OpenAI's limit
        raise RequestError("at most 4 stop sequences are supported")
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise RequestError(f"a stop sequence may have at most {MAX_STOP_CHARS} characters")
    return [s for s in stops if s]


def sampling_kwargs(
    *,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None = None,
    repetition_penalty: float | None = None,
) -> dict[str, Any]:
    """Sampling flags; a temperature of 0 means greedy decoding, as in OpenAI and vLLM."""
    if temperature is not None and temperature < GREEDY_BELOW:
        return {"do_sample": False}
    kwargs: dict[str, Any] = {"do_sample": True, "temperature": temperature or 1.0}
    if top_p is not None:
        kwargs["top_p"] = top_p
    if top_k is not None and top_k > 0:
        kwargs["top_k"] = top_k
    if repetition_penalty is not None:
        kwargs["repetition_penalty"] = repetition_penalty
    return kwargs


def from_openai(
    prompt: str,
    *,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    stop: str | list[str] | None,
    seed: int | None,
) -> GenerateRequest:
    kwargs = sampling_kwargs(temperature=temperature, top_p=top_p)
    if max_tokens is not None:
        kwargs["max_new_tokens"] = max_tokens
    return GenerateRequest(
        prompt=prompt,
        kwargs=kwargs,
        stop=stop_list(stop),
        seed=seed,
        explicit_length=max_tokens is not None,
    )


KSERVE_DEFAULT_MAX_TOKENS = 16  # vLLM's default, which the Triton vLLM backend inherits


class KServeSampling(BaseModel):
    """vLLM's SamplingParams names, as the Triton vLLM backend takes `sampling_parameters`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_tokens: int = Field(KSERVE_DEFAULT_MAX_TOKENS, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)  # vLLM: -1 (or 0) means no top-k
    repetition_penalty: float | None = Field(None, gt=0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    min_tokens: int | None = Field(None, ge=0)


def from_kserve(prompt: str, raw: str | None) -> GenerateRequest:
    """`sampling_parameters`: a JSON object in a BYTES tensor (the Triton vLLM backend's format)."""
    loaded: Any = {}
    if raw:
        try:
            loaded = json.loads(raw)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, a 5000-digit integer
            raise RequestError(f"sampling_parameters is not JSON: {err}") from None
        if not isinstance(loaded, dict):
            raise RequestError("sampling_parameters must be a JSON object")
    unknown = sorted(set(loaded) - set(KServeSampling.model_fields))
    if unknown:
        raise RequestError(f"unsupported sampling parameters: {', '.join(unknown)}")
    try:
        params = KServeSampling.model_validate(loaded)
    except ValidationError as err:
        first = err.errors()[0]  # its loc is the parameter, then the union member tried
        raise RequestError(f"bad sampling parameter {first['loc'][0]}: {first['msg']}") from None
    kwargs = sampling_kwargs(
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        repetition_penalty=params.repetition_penalty,
    )
    if params.min_tokens is not None:
        kwargs["min_new_tokens"] = params.min_tokens
    kwargs["max_new_tokens"] = params.max_tokens
    return GenerateRequest(
        prompt=prompt,
        kwargs=kwargs,
        stop=stop_list(params.stop),
        seed=params.seed,
        explicit_length="max_tokens" in params.model_fields_set,
    )


def from_kaito(
    prompt: str, generate_kwargs: dict[str, Any], limits: GenerationLimits
) -> GenerateRequest:
    """KAITO's generate_kwargs, allow-listed, merged over the model's generation config."""
    check_generate_kwargs(generate_kwargs, limits)
    kwargs = {k: v for k, v in generate_kwargs.items() if v is not None}
    if not kwargs.get("do_sample", False):
        # transformers rejects sampling-only flags in greedy mode; KAITO's defaults set them all.
        for key in ("temperature", "top_k", "top_p", "typical_p"):
            kwargs.pop(key, None)
    return GenerateRequest(prompt=prompt, kwargs=kwargs, explicit_length=True)


def token_budget(
    *, prompt_tokens: int, request: GenerateRequest, context: int, default: int
) -> dict[str, Any]:
    """The request's length limits checked against the model's context window."""
    kwargs = dict(request.kwargs)
    if prompt_tokens >= context:
        raise RequestError(
            f"the prompt is {prompt_tokens} tokens; the model's context is {context} tokens"
        )
    room = context - prompt_tokens
    if "max_length" in kwargs and "max_new_tokens" not in kwargs:
        if kwargs["max_length"] > context:
            raise RequestError(f"max_length {kwargs['max_length']} exceeds the context {context}")
        return kwargs
    wanted = kwargs.get("max_new_tokens")
    if wanted is None:
        kwargs["max_new_tokens"] = min(default, room)
    elif wanted > room:
        if request.explicit_length:
            raise RequestError(
                f"the model's context is {context} tokens; the prompt takes {prompt_tokens} "
                f"and {wanted} more were requested"
            )
        kwargs["max_new_tokens"] = room
    return kwargs
