"""training_config.yaml, the file the tuner checks and the tuning image trains from (pure).

KAITO's shape: a `training_config` mapping with ModelConfig, QuantizationConfig, LoraConfig,
TrainingArguments, DataCollator and DatasetConfig sections. One model for both sides, so the tuner
refuses before any GPU time is spent exactly what the entrypoint would refuse. The sections that go
to a library's constructor (peft's LoraConfig, TRL's SFTConfig, BitsAndBytesConfig) accept any key:
the fields named here are the ones checked, and the library's own validation stays the last word.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONFIG_KEY = "training_config.yaml"
"""The key of the config in the ConfigMap the tuner mounts (and of a user's `tuning.config`)."""
RESULTS_DIR = "/mnt/results"
"""Where the adapter is written unless TrainingArguments.output_dir says otherwise."""
TEXT_COLUMN = "text"
"""The one column the training data is turned into."""


class TrainingConfigError(ValueError):
    """A training config that cannot be used; the message says where and what."""


class _LibrarySection(BaseModel):
    """Keys beyond the checked ones are passed on to the library as the user wrote them."""

    model_config = ConfigDict(extra="allow")

    def given(self) -> dict[str, Any]:
        """What the user wrote (defaults left out), for the library's constructor."""
        return self.model_dump(exclude_unset=True)


class LoraSection(_LibrarySection):
    r: int = Field(8, gt=0)
    lora_alpha: int | float = Field(8, gt=0)  # an int stays an int in the adapter's config
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str | None = None


class TrainingSection(_LibrarySection):
    output_dir: str = RESULTS_DIR
    num_train_epochs: int | float | None = Field(None, gt=0)
    max_steps: int | None = None
    learning_rate: float | None = Field(None, gt=0)
    per_device_train_batch_size: int | None = Field(None, ge=1)


class QuantizationSection(_LibrarySection):
    load_in_4bit: bool = False
    load_in_8bit: bool = False


class DatasetSection(BaseModel):
    """kairyu's reading of the data (KAITO's DatasetConfig); unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    dataset_path: str | None = None
    dataset_extension: Literal["parquet", "json", "jsonl", "csv"] | None = None
    shuffle_dataset: bool = True
    shuffle_seed: int = 42
    context_column: str | None = None
    response_column: str = TEXT_COLUMN
    messages_column: str | None = None
    train_test_split: float = Field(0.8, gt=0, le=1)


class TrainingConfig(BaseModel):
    """The `training_config` mapping."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: dict[str, Any] = Field(default_factory=dict, alias="ModelConfig")
    quantization: QuantizationSection = Field(
        default_factory=QuantizationSection, alias="QuantizationConfig"
    )
    lora: LoraSection = Field(default_factory=LoraSection, alias="LoraConfig")
    training: TrainingSection = Field(default_factory=TrainingSection, alias="TrainingArguments")
    collator: dict[str, Any] = Field(default_factory=dict, alias="DataCollator")
    dataset: DatasetSection = Field(default_factory=DatasetSection, alias="DatasetConfig")

    @property
    def quantized(self) -> bool:
        return self.quantization.load_in_4bit or self.quantization.load_in_8bit


def parse_training_config(text: str) -> TrainingConfig:
    """The config in `text`, or TrainingConfigError naming the first few problems."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise TrainingConfigError(f"{CONFIG_KEY} is not YAML: {err}") from None
    if not isinstance(document, dict) or not isinstance(document.get("training_config"), dict):
        raise TrainingConfigError(f"{CONFIG_KEY} needs a training_config: mapping")
    try:
        return TrainingConfig.model_validate(document["training_config"])
    except ValidationError as err:
        raise TrainingConfigError(f"{CONFIG_KEY}: {_describe(err)}") from None


def _describe(err: ValidationError) -> str:
    parts = []
    for item in err.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"])
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
