"""The runtime server as clients use it: OpenAI's SDK, tritonclient, and KAITO's /chat over HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import tritonclient.http as triton
from openai.types.chat import ChatCompletionMessageParam
from tiny import ADAPTER, MODEL_NAME, Server
from tritonclient.utils import InferenceServerException

PROMPT = "the quick brown fox"


def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def greedy_completion(server: Server, prompt: str = PROMPT, max_tokens: int = 12) -> str:
    done = client(server).completions.create(
        model=MODEL_NAME, prompt=prompt, max_tokens=max_tokens, temperature=0
    )
    return done.choices[0].text


def test_health_and_models(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "Healthy"}
    models = client(server).models.list().data
    assert [(m.id, m.owned_by) for m in models] == [(MODEL_NAME, "kaito")]


def test_chat_completion_and_its_stream_agree(server: Server) -> None:
    openai_client = client(server)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
    done = openai_client.chat.completions.create(
        model=MODEL_NAME,
        messages=messages,
        max_tokens=12,
        temperature=0,
    )
    text = done.choices[0].message.content
    assert text
    assert done.usage is not None
    assert 0 < done.usage.completion_tokens <= 12
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens

    chunks = list(
        openai_client.chat.completions.create(
            model=MODEL_NAME,
            messages=messages,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == [done.choices[0].finish_reason]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == done.usage.completion_tokens


def test_completions_stream_echo_and_stop(server: Server) -> None:
    openai_client = client(server)
    text = greedy_completion(server)
    streamed = openai_client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=12, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == text

    echoed = openai_client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=12, temperature=0, echo=True
    )
    assert echoed.choices[0].text == PROMPT + text

    # Stop at a piece of what greedy decoding makes: the text ends just before it.
    stop = text.strip()[2:4]
    assert stop, text
    stopped = openai_client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop]
    )
    assert stopped.choices[0].text == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"


def test_sampling_is_reproducible_with_a_seed(server: Server) -> None:
    def sample(seed: int) -> str:
        done = client(server).completions.create(
            model=MODEL_NAME, prompt=PROMPT, max_tokens=16, temperature=1.0, seed=seed
        )
        return done.choices[0].text

    assert sample(7) == sample(7)
    assert len({sample(s) for s in range(4)}) > 1


def test_kaito_chat_endpoint(server: Server) -> None:
    greedy = {"max_length": 16, "do_sample": False}
    full = httpx.post(f"{server.url}/chat", json={"prompt": PROMPT, "generate_kwargs": greedy})
    assert full.status_code == 200
    result = full.json()["Result"]
    assert result.startswith(PROMPT)
    assert len(result) > len(PROMPT)

    only_new = httpx.post(
        f"{server.url}/chat",
        json={"prompt": PROMPT, "return_full_text": False, "generate_kwargs": greedy},
    ).json()["Result"]
    assert PROMPT + only_new == result

    conversation = httpx.post(
        f"{server.url}/chat",
        json={
            "messages": [{"role": "user", "content": "hi"}],
            "generate_kwargs": {"max_length": 48, "do_sample": False},
        },
    )
    assert conversation.status_code == 200
    assert isinstance(conversation.json()["Result"], str)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"generate_kwargs": {"max_length": 10}}, 400, "either prompt"),
        ({"prompt": "a", "generate_kwargs": {"max_length": 0}}, 422, "greater than or equal to 1"),
        ({"prompt": "a", "generate_kwargs": {"not_a_flag": 3}}, 400, "not_a_flag"),
        ({"prompt": "a " * 400}, 400, "context is 256 tokens"),
    ],
)
def test_kaito_chat_rejects_bad_requests(
    server: Server, body: dict[str, object], status: int, message: str
) -> None:
    response = httpx.post(f"{server.url}/chat", json=body)
    assert response.status_code == status
    assert message in json.dumps(response.json())


def test_openai_errors_are_4xx_with_a_message(server: Server) -> None:
    openai_client = client(server)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        openai_client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        openai_client.completions.create(model=MODEL_NAME, prompt="x", max_tokens=2, n=2)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        openai_client.completions.create(model=MODEL_NAME, prompt="x", temperature=5)
    with pytest.raises(openai.BadRequestError, match="context is 256 tokens"):
        openai_client.completions.create(model=MODEL_NAME, prompt="word " * 300, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="not supported"):
        openai_client.chat.completions.create(
            model=MODEL_NAME,
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ],
        )
    # A refused streaming request is refused before the stream starts.
    with pytest.raises(openai.BadRequestError, match="context"):
        openai_client.completions.create(
            model=MODEL_NAME, prompt="word " * 300, max_tokens=2, stream=True
        )


def _inputs(prompt: str, params: dict[str, object], *, binary: bool) -> list[triton.InferInput]:
    text = triton.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode()], dtype=object), binary_data=binary)
    sampling = triton.InferInput("sampling_parameters", [1], "BYTES")
    sampling.set_data_from_numpy(
        np.array([json.dumps(params).encode()], dtype=object), binary_data=binary
    )
    exclude = triton.InferInput("exclude_input_in_output", [1], "BOOL")
    exclude.set_data_from_numpy(np.array([True]), binary_data=binary)
    return [text, sampling, exclude]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_talks_to_it(server: Server, binary: bool) -> None:
    tc = triton.InferenceServerClient(url=server.hostport)
    try:
        assert tc.is_server_live()
        assert tc.is_server_ready()
        assert tc.is_model_ready(MODEL_NAME)
        assert not tc.is_model_ready("other")
        metadata = tc.get_model_metadata(MODEL_NAME)
        assert metadata["inputs"][0]["name"] == "text_input"
        result = tc.infer(
            MODEL_NAME,
            _inputs(PROMPT, {"max_tokens": 12, "temperature": 0}, binary=binary),
            outputs=[triton.InferRequestedOutput("text_output", binary_data=binary)],
        )
        (output,) = result.as_numpy("text_output")
        text = output.decode() if isinstance(output, bytes) else output
        # Same model, same greedy decoding: the same text as the OpenAI endpoint gives.
        assert text == greedy_completion(server)
    finally:
        tc.close()


def test_tritonclient_gets_clear_errors(server: Server) -> None:
    tc = triton.InferenceServerClient(url=server.hostport)
    try:
        wrong = triton.InferInput("prompt", [1], "BYTES")
        wrong.set_data_from_numpy(np.array([b"x"], dtype=object))
        with pytest.raises(InferenceServerException, match="unexpected input prompt"):
            tc.infer(MODEL_NAME, [wrong])
        with pytest.raises(
            InferenceServerException, match="unsupported sampling parameters: bogus"
        ):
            tc.infer(MODEL_NAME, _inputs("x", {"bogus": 1}, binary=True))
        with pytest.raises(InferenceServerException, match="unknown model"):
            tc.infer("other", _inputs("x", {}, binary=True))
    finally:
        tc.close()


def test_adapter_changes_the_output(server: Server, tuned: Server) -> None:
    assert greedy_completion(tuned) != greedy_completion(server)
    metrics = httpx.get(f"{tuned.url}/metrics").text
    assert f'kairyu_runtime_adapter_strength{{adapter="{ADAPTER}"}} 1.0' in metrics


def test_metrics_count_requests_and_tokens(server: Server) -> None:
    def generated() -> float:
        text = httpx.get(f"{server.url}/metrics").text
        match = re.search(r"^kairyu_runtime_generation_tokens_total ([0-9.e+]+)$", text, re.M)
        assert match, text
        return float(match.group(1))

    before = generated()
    greedy_completion(server, max_tokens=5)
    assert generated() > before
    httpx.post(f"{server.url}/v1/completions", json={"model": "absent", "prompt": "x"})
    text = httpx.get(f"{server.url}/metrics").text
    assert 'kairyu_runtime_requests_total{route="/v1/completions",status="200"}' in text
    assert 'kairyu_runtime_requests_total{route="/v1/completions",status="404"}' in text


def test_missing_weights_stop_the_server_with_the_reason(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kairyu_runtime",
            f"--pretrained_model_name_or_path={tmp_path / 'absent'}",
            "--log_format=text",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "not a local directory" in done.stderr
    assert "--allow_remote_files" in done.stderr
