"""training_config.yaml as the entrypoint reads it: the shared model, turned into library arguments.

The model is kairyu_contracts.tuning, the one the tuner checks the file with before the Job
starts. Here each section becomes the keyword arguments of the real object (peft's LoraConfig,
TRL's SFTConfig, BitsAndBytesConfig), whose own validation is the last word, and its message is
what the Job fails with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kairyu_contracts.tuning import (
    TEXT_COLUMN,
    DatasetSection,
    TrainingConfig,
    TrainingConfigError,
    parse_training_config,
)
from kairyu_tuning.failure import StepError

__all__ = ["TEXT_COLUMN", "DatasetSection", "TrainingConfig", "load", "lora_kwargs", "output_dir"]


def load(path: Path) -> TrainingConfig:
    try:
        text = path.read_text()
    except OSError as err:
        raise StepError(f"cannot read the training config {path}: {err}") from None
    try:
        return parse_training_config(text)
    except TrainingConfigError as err:
        raise StepError(str(err)) from None


def output_dir(config: TrainingConfig) -> Path:
    return Path(config.training.output_dir)


def lora_kwargs(config: TrainingConfig) -> dict[str, Any]:
    """LoraConfig's arguments: the user's, with the preset's target modules when none is given."""
    kwargs = config.lora.given()
    default_modules = os.environ.get("DEFAULT_TARGET_MODULES")
    if "target_modules" not in kwargs and default_modules:
        kwargs["target_modules"] = [m.strip() for m in default_modules.split(",") if m]
    kwargs.setdefault("task_type", "CAUSAL_LM")
    return kwargs
