"""The entrypoint LoRA-tunes a tiny random model on the CPU; QLoRA without CUDA stops at once."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from oci import pull, registry
from peft import PeftModel
from tiny import build_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from kairyu_tuning import push

__all__ = ["registry"]  # the fixture, used by name

CHATS = [
    ("what runs on gpu nodes?", "pods with gpus run on gpu nodes."),
    ("what does a workspace name?", "a workspace names a preset model."),
    ("say hello", "hello there, how are you today?"),
    ("what does kubernetes do?", "kubernetes schedules pods onto nodes."),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("base")
    build_model(directory)
    return directory


def write_parquet(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rows = [
        [{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in CHATS * 6
    ]
    path = directory / "train.parquet"
    pq.write_table(pa.table({"messages": rows}), path)
    return path


def write_config(path: Path, output: Path, *, quantized: bool = False) -> Path:
    path.write_text(
        textwrap.dedent(
            f"""\
            training_config:
              ModelConfig:
                torch_dtype: float32
              QuantizationConfig:
                load_in_4bit: {str(quantized).lower()}
              LoraConfig:
                r: 8
                lora_alpha: 16
                lora_dropout: 0.0
                target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
              TrainingArguments:
                output_dir: {output}
                num_train_epochs: 12
                per_device_train_batch_size: 4
                learning_rate: 0.01
                logging_steps: 1
                save_strategy: "no"
                use_cpu: true
                seed: 0
              DatasetConfig:
                shuffle_dataset: true
                train_test_split: 1
            """
        )
    )
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "kairyu_tuning.train", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )


def test_lora_tuning_lowers_the_loss_and_writes_a_loadable_adapter(
    model_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "results"
    write_parquet(tmp_path / "data")
    config = write_config(tmp_path / "training_config.yaml", output)
    done = run(f"--config={config}", f"--model={model_dir}", f"--data={tmp_path / 'data'}")
    assert done.returncode == 0, done.stderr[-3000:]

    assert (output / "fine_tuning_completed.txt").is_file()
    assert (output / "adapter_config.json").is_file()
    assert (output / "adapter_model.safetensors").is_file()
    losses = [
        e["loss"] for e in json.loads((output / "training_log.json").read_text()) if "loss" in e
    ]
    assert len(losses) >= 10
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.5, losses  # nats per token: well beyond step-to-step noise
    lines = done.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"done": True, "adapter": str(output)}
    steps = [json.loads(line) for line in lines if line.startswith('{"step"')]
    assert steps[-1]["step"] == steps[-1]["max_steps"]

    # The adapter loads back with peft and changes what the model predicts.
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    inputs = tokenizer("hello there, how are", return_tensors="pt")
    with torch.inference_mode():
        before = base(**inputs).logits
        tuned = PeftModel.from_pretrained(base, str(output))
        after = tuned(**inputs).logits
    assert not torch.allclose(before, after)


def test_qlora_without_cuda_stops_at_once_and_says_why(model_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "results"
    config = write_config(tmp_path / "training_config.yaml", output, quantized=True)
    done = run(f"--config={config}", f"--model={model_dir}", "--method=qlora", f"--data={tmp_path}")
    assert done.returncode == 2
    assert "QLoRA needs an NVIDIA GPU with CUDA" in done.stderr
    assert not output.exists()


def test_a_bad_training_argument_fails_with_its_name(model_dir: Path, tmp_path: Path) -> None:
    write_parquet(tmp_path / "data")
    config = write_config(tmp_path / "training_config.yaml", tmp_path / "out")
    config.write_text(
        config.read_text().replace("use_cpu: true", "use_cpu: true\n    no_such_flag: 1")
    )
    done = run(f"--config={config}", f"--model={model_dir}", f"--data={tmp_path / 'data'}")
    assert done.returncode == 2
    assert "TrainingArguments" in done.stderr
    assert "no_such_flag" in done.stderr


def test_the_tuned_adapter_goes_to_a_registry_and_back_unchanged(
    model_dir: Path, tmp_path: Path, registry: str
) -> None:
    output = tmp_path / "results"
    write_parquet(tmp_path / "data")
    config = write_config(tmp_path / "training_config.yaml", output)
    config.write_text(config.read_text().replace("num_train_epochs: 12", "num_train_epochs: 1"))
    assert (
        run(f"--config={config}", f"--model={model_dir}", f"--data={tmp_path / 'data'}").returncode
        == 0
    )
    image = f"{registry}/adapters/tiny-tuned:1"
    push.main([f"--image={image}", f"--source={output}", "--model-name=tiny", "--insecure"])
    _, _, layer = pull(registry, "adapters/tiny-tuned", "1")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        for name in push.ADAPTER_FILES:
            member = tar.extractfile(f"data/{name}")
            assert member is not None
            assert member.read() == (output / name).read_bytes()
