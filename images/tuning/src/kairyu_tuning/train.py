"""The tuning entrypoint: LoRA or QLoRA on a preset model with peft and TRL's SFTTrainer.

`accelerate launch -m kairyu_tuning.train --config=… --model=… --data=/mnt/data --method=…`
reads KAITO's training_config.yaml, trains, writes the adapter (adapter_config.json and
adapter_model.safetensors) to the config's output_dir, then the completion marker
`fine_tuning_completed.txt`. Progress is served as Prometheus metrics (`--metrics-port`) and
printed as JSON lines. QLoRA's 4-bit quantization needs CUDA (bitsandbytes); without a GPU it stops
before loading anything, with a message that says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from prometheus_client import Gauge, start_http_server
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from kairyu_tuning import config as training_config
from kairyu_tuning.data import load_text
from kairyu_tuning.failure import StepError, fail

COMPLETION_MARKER = "fine_tuning_completed.txt"
TRAINING_LOG = "training_log.json"
STEP = Gauge("kairyu_tuning_step", "optimizer steps done")
MAX_STEPS = Gauge("kairyu_tuning_max_steps", "optimizer steps planned")
LOSS = Gauge("kairyu_tuning_loss", "the last logged training loss")
EPOCH = Gauge("kairyu_tuning_epoch", "epochs done (fractional)")
PROGRESS = Gauge("kairyu_tuning_progress_ratio", "steps done / steps planned")


def require_cuda(sections: training_config.TrainingConfig, method: str, *, cuda: bool) -> None:
    """QLoRA (or any k-bit quantization) cannot run without CUDA: say so before any work."""
    if (method == "qlora" or sections.quantized) and not cuda:
        raise StepError(
            "QLoRA needs an NVIDIA GPU with CUDA: bitsandbytes' 4-bit quantization has no CPU "
            "path, and this machine has no CUDA device. Use method lora here, or run on a GPU node."
        )


class _Progress(TrainerCallback):
    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero:
            return
        STEP.set(state.global_step)
        MAX_STEPS.set(state.max_steps)
        EPOCH.set(state.epoch or 0)
        PROGRESS.set(state.global_step / state.max_steps if state.max_steps else 0)
        if logs and "loss" in logs:
            LOSS.set(logs["loss"])
        record = {"step": state.global_step, "max_steps": state.max_steps, **(logs or {})}
        print(json.dumps(record), flush=True)  # noqa: T201 - progress for `kubectl logs`


def _model_kwargs(
    sections: training_config.TrainingConfig, source: str, cache_dir: str | None
) -> dict[str, Any]:
    kwargs = {k: v for k, v in sections.model.items() if k != "chat_template"}
    if "torch_dtype" in kwargs:  # KAITO's name; transformers 5 calls it dtype
        kwargs["dtype"] = kwargs.pop("torch_dtype")
    kwargs.setdefault("local_files_only", Path(source).is_dir())
    if cache_dir:
        kwargs.setdefault("cache_dir", cache_dir)
    if sections.quantized:
        try:
            kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
                **sections.quantization.given()
            )
        except (TypeError, ValueError) as err:
            raise StepError(f"QuantizationConfig: {err}") from None
    return kwargs


def train(args: argparse.Namespace) -> Path:
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415 - after the cheap checks
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]  # noqa: PLC0415

    sections = training_config.load(Path(args.config))
    require_cuda(sections, args.method, cuda=torch.cuda.is_available())
    if args.metrics_port:
        start_http_server(args.metrics_port)
    model_kwargs = _model_kwargs(sections, args.model, args.cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            args.model,
            local_files_only=model_kwargs["local_files_only"],
            cache_dir=model_kwargs.get("cache_dir"),
        )
        model = AutoModelForCausalLM.from_pretrained(args.model, **model_kwargs)
    except (OSError, ValueError) as err:
        raise StepError(f"cannot load the model {args.model}: {err}") from None
    if template := sections.model.get("chat_template"):
        tokenizer.chat_template = Path(template).read_text()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_set, eval_set = load_text(Path(args.data), sections.dataset, tokenizer)
    try:
        peft_model = get_peft_model(model, LoraConfig(**training_config.lora_kwargs(sections)))
    except (TypeError, ValueError) as err:
        raise StepError(f"LoraConfig: {err}") from None
    output = training_config.output_dir(sections)
    try:
        sft = SFTConfig(
            **{
                "report_to": "none",
                "dataset_text_field": training_config.TEXT_COLUMN,
                **sections.training.given(),
                "output_dir": str(output),
            }
        )
    except (TypeError, ValueError) as err:
        raise StepError(f"TrainingArguments: {err}") from None
    trainer = SFTTrainer(
        model=peft_model,
        args=sft,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        callbacks=[_Progress()],
    )
    trainer.train()
    if trainer.is_world_process_zero():
        output.mkdir(parents=True, exist_ok=True)
        peft_model.save_pretrained(str(output))  # the adapter only, not the base weights
        (output / TRAINING_LOG).write_text(json.dumps(trainer.state.log_history, indent=1))
        (output / COMPLETION_MARKER).write_text("done\n")
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kairyu_tuning.train", description=__doc__)
    parser.add_argument("--config", default="/mnt/config/training_config.yaml")
    parser.add_argument("--model", required=True, help="a local directory or a hub id")
    parser.add_argument("--data", default="/mnt/data")
    parser.add_argument("--method", choices=["lora", "qlora"], default="lora")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--metrics-port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        output = train(args)
    except StepError as err:
        fail(f"tuning failed: {err}", code=2)
    print(json.dumps({"done": True, "adapter": str(output)}), flush=True)  # noqa: T201
    sys.exit(0)


if __name__ == "__main__":
    main()
