"""training_config.yaml: KAITO's default LoRA / QLoRA configs, and checks of a user's config (pure).

The tuner checks a user's `tuning.config` ConfigMap with the model the tuning image reads it with
(kairyu_contracts.tuning) before any GPU time is spent, and explains what is wrong in the JobStarted
condition. It does not know every transformers argument; the entrypoint builds the real
TrainingArguments / LoraConfig from the same file and fails the Job with their message if a value
is refused there.
"""

from __future__ import annotations

from kairyu_contracts.tuning import (
    CONFIG_KEY,
    RESULTS_DIR,
    TrainingConfigError,
    parse_training_config,
)

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


def default_config(method: str) -> str:
    """KAITO's lora-params / qlora-params templates."""
    quantization = _QLORA_QUANTIZATION if method.lower() == "qlora" else _LORA_QUANTIZATION
    return _COMMON.format(quantization=quantization, results=RESULTS_DIR)


def check(text: str, method: str) -> str:
    """The config's output_dir (where the results volume goes) if the config is usable."""
    config = parse_training_config(text)
    if method.lower() == "qlora" and not config.quantized:
        raise TrainingConfigError(
            f"{CONFIG_KEY}: method qlora needs QuantizationConfig.load_in_4bit (or 8bit): true"
        )
    if not config.training.output_dir.startswith("/"):
        raise TrainingConfigError(
            f"{CONFIG_KEY}: TrainingArguments.output_dir must be an absolute path"
        )
    return config.training.output_dir
