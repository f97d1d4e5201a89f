"""training_config.yaml: KAITO's default LoRA / QLoRA configs, and checks of a user's config (pure).

The tuner checks the shape a user's `tuning.config` ConfigMap must have before any GPU time is
spent, and explains what is wrong in the JobStarted condition. It does not know every transformers
argument; the entrypoint builds the real TrainingArguments / LoraConfig from the same file and
fails the Job with their message if a value is refused there.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONFIG_KEY = "training_config.yaml"
RESULTS_DIR = "/mnt/results"

_COMMON = """\
training_config:
  ModelConfig:
    torch_dtype: "bfloat16"
    device_map: "auto"
  QuantizationConfig:
{quantization}
  LoraConfig:
    r: 8
    lora_alpha: 8
    lora_dropout: 0.0
  TrainingArguments:
    output_dir: "{results}"
    ddp_find_unused_parameters: false
    save_strategy: "no"
    per_device_train_batch_size: 1
  DataCollator:
    mlm: true
  DatasetConfig:
    shuffle_dataset: true
    train_test_split: 1
"""
_LORA_QUANTIZATION = "    load_in_4bit: false"
_QLORA_QUANTIZATION = """\
    load_in_4bit: true
    bnb_4bit_quant_type: "nf4"
    bnb_4bit_compute_dtype: "bfloat16"
    bnb_4bit_use_double_quant: true"""


class TrainingConfigError(ValueError):
    """A tuning config that cannot be used, with what is wrong in it."""


def default_config(method: str) -> str:
    """KAITO's lora-params / qlora-params templates."""
    quantization = _QLORA_QUANTIZATION if method.lower() == "qlora" else _LORA_QUANTIZATION
    return _COMMON.format(quantization=quantization, results=RESULTS_DIR)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Lora(_Open):
    r: int = Field(8, gt=0)
    lora_alpha: float = Field(8, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str | None = None


class _Training(_Open):
    output_dir: str = RESULTS_DIR
    num_train_epochs: float | None = Field(None, gt=0)
    max_steps: int | None = None
    learning_rate: float | None = Field(None, gt=0)
    per_device_train_batch_size: int | None = Field(None, ge=1)


class _Quantization(_Open):
    load_in_4bit: bool = False
    load_in_8bit: bool = False


class _Dataset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_path: str | None = None
    dataset_extension: Literal["parquet", "json", "jsonl", "csv"] | None = None
    shuffle_dataset: bool = True
    shuffle_seed: int = 42
    context_column: str | None = None
    response_column: str = "text"
    messages_column: str | None = None
    train_test_split: float = Field(0.8, gt=0, le=1)


class _Sections(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model_config_section: dict[str, Any] = Field(default_factory=dict, alias="ModelConfig")
    quantization: _Quantization = Field(default_factory=_Quantization, alias="QuantizationConfig")
    lora: _Lora = Field(default_factory=_Lora, alias="LoraConfig")
    training: _Training = Field(default_factory=_Training, alias="TrainingArguments")
    collator: dict[str, Any] = Field(default_factory=dict, alias="DataCollator")
    dataset: _Dataset = Field(default_factory=_Dataset, alias="DatasetConfig")


def check(text: str, method: str) -> str:
    """The config's output_dir (where the results volume goes) if the config is usable."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise TrainingConfigError(f"{CONFIG_KEY} is not YAML: {err}") from None
    if not isinstance(document, dict) or not isinstance(document.get("training_config"), dict):
        raise TrainingConfigError(f"{CONFIG_KEY} needs a training_config: mapping")
    try:
        sections = _Sections.model_validate(document["training_config"])
    except ValidationError as err:
        raise TrainingConfigError(f"{CONFIG_KEY}: {_describe(err)}") from None
    quantized = sections.quantization.load_in_4bit or sections.quantization.load_in_8bit
    if method.lower() == "qlora" and not quantized:
        raise TrainingConfigError(
            f"{CONFIG_KEY}: method qlora needs QuantizationConfig.load_in_4bit (or 8bit): true"
        )
    if not sections.training.output_dir.startswith("/"):
        raise TrainingConfigError(
            f"{CONFIG_KEY}: TrainingArguments.output_dir must be an absolute path"
        )
    return sections.training.output_dir


def _describe(err: ValidationError) -> str:
    parts = []
    for item in err.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"])
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
