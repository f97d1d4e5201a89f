"""A tiny random Llama with a tokenizer built here, a LoRA adapter for it, and runtime servers.

Nothing comes from a model hub: the tokenizer is trained on a few sentences, the weights are random
from a fixed seed, and the adapter is peft's LoRA with random (non-zero) B matrices so that it
visibly changes what the model generates.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from peft import LoraConfig, get_peft_model
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

MODEL_NAME = "tiny"
ADAPTER = "tone"
API_KEY = "s3cret-test-key"
# The guarded server: an API key, no wait queue, and a small body limit.
GUARDED_ENV = {
    "KAIRYU_RUNTIME_API_KEY": API_KEY,
    "KAIRYU_RUNTIME_MAX_QUEUE": "0",
    "KAIRYU_RUNTIME_MAX_BODY_BYTES": "65536",
}
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "kubernetes schedules pods onto nodes with gpus",
    "a workspace names a preset model and the nodes it runs on",
    "hello there, how are you today? I am fine, thank you.",
    "large language models predict the next token from the ones before",
] * 20
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_model(directory: Path) -> None:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CORPUS, vocab_size=400, min_frequency=1, special_tokens=["<pad>", "<s>", "</s>"]
    )
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=256,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def build_adapter(model_dir: Path, directory: Path) -> None:
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(
        r=8,
        lora_alpha=64,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    get_peft_model(base, config).save_pretrained(str(directory))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_server(
    model_dir: Path, adapters: Path, log: Path, env: dict[str, str] | None = None
) -> Server:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "kairyu_runtime",
        f"--pretrained_model_name_or_path={model_dir}",
        f"--served_model_name={MODEL_NAME}",
        "--torch_dtype=float32",
        "--pipeline=text-generation",
        f"--adapters_dir={adapters}",
        "--host=127.0.0.1",
        f"--port={port}",
        "--log_format=text",
        "--default_max_tokens=32",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    return Server(f"http://127.0.0.1:{port}", port, process, log)


def wait_healthy(server: Server, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"runtime exited with {server.process.returncode}:\n{server.log.read_text()}"
            )
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"runtime not healthy after {timeout}s:\n{server.log.read_text()}")


def stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
