"""The runtime's configuration: KAITO's transformers-runtime flags, parsed once in main().

The deployer starts the runtime with KAITO's command line (`--pretrained_model_name_or_path=…
--torch_dtype=… --pipeline=…`), so the flag names are KAITO's, underscores included; each can
also be set as KAIRYU_RUNTIME_<NAME>. Unknown flags are ignored, as accelerate launch may pass
its own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_WEIGHTS = "/workspace/tfs/weights"
DEFAULT_ADAPTERS = "/mnt/adapter"


class RuntimeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KAIRYU_RUNTIME_",
        cli_prog_name="kairyu-runtime",
        cli_implicit_flags=True,
        cli_ignore_unknown_args=True,
        extra="ignore",
    )

    pretrained_model_name_or_path: str = Field(
        DEFAULT_WEIGHTS,
        description="local directory with the weights (or a hub id with remote files)",
    )
    served_model_name: str | None = Field(None, description="model name in the APIs")
    allow_remote_files: bool = Field(False, description="allow downloading weights from a hub")
    revision: str | None = None
    cache_dir: str | None = Field(None, description="where downloaded weights are kept")
    trust_remote_code: bool = False
    torch_dtype: str = Field("auto", description="auto, float32, float16 or bfloat16")
    device_map: str = "auto"
    pipeline: Literal["text-generation", "conversational"] = "text-generation"
    chat_template: str | None = Field(None, description="a Jinja chat template file")
    adapters_dir: str = Field(DEFAULT_ADAPTERS, description="one LoRA adapter per sub-directory")
    combination_type: Literal["svd", "linear", "cat"] = Field(
        "svd", description="how peft combines several adapters by strength"
    )
    host: str = "0.0.0.0"  # noqa: S104 - a pod serves on every interface
    port: int = 5000
    default_max_tokens: int = Field(512, ge=1, description="when a request sets no limit")
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    # What one request may ask of the server (docs/runtime.md, "Limits"). The defaults fit a
    # single-GPU model server: a few MiB of prompt, one generation at a time plus a short queue.
    api_key: SecretStr | None = Field(
        None,
        description="when set, every API call needs `Authorization: Bearer <key>` "
        "(health probes and /metrics excepted); set it from a Secret, never on the command line",
    )
    max_body_bytes: int = Field(4 << 20, ge=1, description="request body limit (413 above)")
    max_decompressed_bytes: int = Field(
        4 << 20, ge=1, description="a gzip/deflate KServe body's limit once inflated (413 above)"
    )
    max_prompt_chars: int | None = Field(
        None,
        ge=1,
        description="a prompt's character limit, checked before tokenizing; "
        "default 32 characters per token of the model's context",
    )
    max_prompts: int = Field(
        8, ge=1, description="prompts in one /v1/completions or KServe infer request"
    )
    max_num_beams: int = Field(4, ge=1, description="largest num_beams /chat may ask for")
    max_num_return_sequences: int = Field(
        1, ge=1, description="largest num_return_sequences /chat may ask for"
    )
    max_queue: int = Field(
        16, ge=0, description="requests waiting for the model; more are refused with 429"
    )
    retry_after_seconds: int = Field(
        2, ge=1, description="the Retry-After a refused (429) request is given"
    )

    @property
    def model_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        return self.pretrained_model_name_or_path.rstrip("/").rsplit("/", 1)[-1].lower()
