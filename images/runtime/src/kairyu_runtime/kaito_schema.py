"""KAITO's classic `/chat` request body (UnifiedRequestModel) with its generate_kwargs defaults.

Extra generate_kwargs are passed through to transformers as KAITO does; transformers rejects the
ones it does not know, and that message goes back to the caller as a 400.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GenerateKwargs(BaseModel):
    model_config = ConfigDict(extra="allow")

    max_length: int = Field(200, ge=1)
    min_length: int = Field(0, ge=0)
    do_sample: bool = True
    early_stopping: bool = False
    num_beams: int = Field(1, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(10, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    typical_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    pad_token_id: int | None = None
    eos_token_id: int | list[int] | None = None


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
