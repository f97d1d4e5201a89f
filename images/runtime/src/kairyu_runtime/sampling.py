"""From each API's sampling parameters to transformers' `generate()` keyword arguments.

The three APIs name the same knobs differently (OpenAI `max_tokens`, vLLM/Triton
`sampling_parameters`, KAITO's `generate_kwargs`). They meet here as one `GenerateRequest` so the
engine has a single way to run, and these mappings stay pure and testable without a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

GREEDY_BELOW = 1e-5


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


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if len(stops) > 4:  # noqa: PLR2004 - OpenAI's limit
        raise RequestError("at most 4 stop sequences are supported")
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


# vLLM's SamplingParams names, as the Triton vLLM backend takes them in `sampling_parameters`.
_KSERVE_KNOWN = {
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "stop",
    "seed",
    "min_tokens",
}
KSERVE_DEFAULT_MAX_TOKENS = 16  # vLLM's default, which the Triton vLLM backend inherits


def from_kserve(prompt: str, raw: str | None) -> GenerateRequest:
    """`sampling_parameters`: a JSON object in a BYTES tensor (the Triton vLLM backend's format)."""
    params: dict[str, Any] = {}
    if raw:
        try:
            loaded = json.loads(raw)
        except json.JSONDecodeError as err:
            raise RequestError(f"sampling_parameters is not JSON: {err}") from None
        if not isinstance(loaded, dict):
            raise RequestError("sampling_parameters must be a JSON object")
        params = loaded
    unknown = sorted(set(params) - _KSERVE_KNOWN)
    if unknown:
        raise RequestError(f"unsupported sampling parameters: {', '.join(unknown)}")
    try:
        max_tokens = int(params.get("max_tokens", KSERVE_DEFAULT_MAX_TOKENS))
        kwargs = sampling_kwargs(
            temperature=_opt_float(params.get("temperature")),
            top_p=_opt_float(params.get("top_p")),
            top_k=_opt_int(params.get("top_k")),
            repetition_penalty=_opt_float(params.get("repetition_penalty")),
        )
        if "min_tokens" in params:
            kwargs["min_new_tokens"] = int(params["min_tokens"])
        seed = _opt_int(params.get("seed"))
    except (TypeError, ValueError) as err:
        raise RequestError(f"bad sampling parameter: {err}") from None
    if max_tokens < 1:
        raise RequestError("max_tokens must be at least 1")
    kwargs["max_new_tokens"] = max_tokens
    return GenerateRequest(
        prompt=prompt,
        kwargs=kwargs,
        stop=stop_list(params.get("stop")),
        seed=seed,
        explicit_length="max_tokens" in params,
    )


def from_kaito(prompt: str, generate_kwargs: dict[str, Any]) -> GenerateRequest:
    """KAITO passes generate_kwargs through to transformers, merged over the model's config."""
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


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
