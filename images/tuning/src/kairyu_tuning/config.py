"""training_config.yaml as the entrypoint reads it: KAITO's sections, turned into library objects.

The tuner checks the same file's shape before the Job starts; here each section becomes the real
object (peft's LoraConfig, TRL's SFTConfig, BitsAndBytesConfig), whose own validation is the last
word, and its message is what the Job fails with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kairyu_tuning.failure import StepError

TEXT_COLUMN = "text"


class DatasetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_path: str | None = None
    dataset_extension: Literal["parquet", "json", "jsonl", "csv"] | None = None
    shuffle_dataset: bool = True
    shuffle_seed: int = 42
    context_column: str | None = None
    response_column: str = TEXT_COLUMN
    messages_column: str | None = None
    train_test_split: float = Field(0.8, gt=0, le=1)


class Sections(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: dict[str, Any] = Field(default_factory=dict, alias="ModelConfig")
    quantization: dict[str, Any] = Field(default_factory=dict, alias="QuantizationConfig")
    lora: dict[str, Any] = Field(default_factory=dict, alias="LoraConfig")
    training: dict[str, Any] = Field(default_factory=dict, alias="TrainingArguments")
    collator: dict[str, Any] = Field(default_factory=dict, alias="DataCollator")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig, alias="DatasetConfig")

    @property
    def quantized(self) -> bool:
        return bool(self.quantization.get("load_in_4bit") or self.quantization.get("load_in_8bit"))

    @property
    def output_dir(self) -> Path:
        return Path(self.training.get("output_dir") or "/mnt/results")

    def lora_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.lora)
        default_modules = os.environ.get("DEFAULT_TARGET_MODULES")
        if "target_modules" not in kwargs and default_modules:
            kwargs["target_modules"] = [m.strip() for m in default_modules.split(",") if m]
        kwargs.setdefault("task_type", "CAUSAL_LM")
        return kwargs


def load(path: Path) -> Sections:
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as err:
        raise StepError(f"cannot read the training config {path}: {err}") from None
    except yaml.YAMLError as err:
        raise StepError(f"the training config is not YAML: {err}") from None
    if not isinstance(document, dict) or not isinstance(document.get("training_config"), dict):
        raise StepError("the training config needs a training_config: mapping")
    try:
        return Sections.model_validate(document["training_config"])
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StepError(f"training config: {where}: {first['msg']}") from None
