"""KAITO's classic `/chat` request body (UnifiedRequestModel) with its generate_kwargs defaults.

KAITO passes generate_kwargs through to transformers. Here each one a request may set is a typed
field (sampling.GENERATE_ALLOWED names the same set); other keys are kept only so that
sampling.from_kaito can refuse them by name with a 400, since several of transformers'
`generate()` arguments load and run code (`custom_generate`, `trust_remote_code`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Enough for any real use; a list of 100k banned words would be paid for at every token.
_MAX_TOKEN_LISTS = 1024


class GenerateKwargs(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    # KAITO's documented defaults
    max_length: int = Field(200, ge=1)
    min_length: int = Field(0, ge=0)
    do_sample: bool = True
    early_stopping: bool | Literal["never"] = False
    num_beams: int = Field(1, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(10, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    typical_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    pad_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    # transformers' other length, sampling and penalty options (None: the model's own)
    max_new_tokens: int | None = Field(None, ge=1)
    min_new_tokens: int | None = Field(None, ge=0)
    max_time: float | None = Field(None, gt=0)
    num_return_sequences: int | None = Field(None, ge=1)
    min_p: float | None = Field(None, ge=0, le=1)
    epsilon_cutoff: float | None = Field(None, ge=0, lt=1)
    eta_cutoff: float | None = Field(None, ge=0, lt=1)
    length_penalty: float | None = None
    no_repeat_ngram_size: int | None = Field(None, ge=0)
    bad_words_ids: list[list[int]] | None = Field(None, max_length=_MAX_TOKEN_LISTS)
    suppress_tokens: list[int] | None = Field(None, max_length=_MAX_TOKEN_LISTS)
    begin_suppress_tokens: list[int] | None = Field(None, max_length=_MAX_TOKEN_LISTS)
    renormalize_logits: bool | None = None
    remove_invalid_values: bool | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | list[int] | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str | None = None
    messages: list[Message] | None = None
    return_full_text: bool = True
    clean_up_tokenization_spaces: bool = False
    prefix: str | None = None
    generate_kwargs: GenerateKwargs = Field(default_factory=GenerateKwargs)

    def generation_kwargs(self) -> dict[str, Any]:
        return self.generate_kwargs.model_dump()
