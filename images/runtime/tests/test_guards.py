"""What a caller cannot do to the runtime: run code, exhaust it, or use it without the key.

Each test is one attack or mistake from issue 14, sent over HTTP to a real server with the tiny
model: the refusal is what the caller sees, and where the harm would be invisible in the
answer (code that ran, memory that was taken, a generation that kept going) the test looks at
the server's side as well.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tiny import API_KEY, MODEL_NAME, Server

from kairyu_runtime import sampling
from kairyu_runtime.kaito_schema import GenerateKwargs

AUTH = {"Authorization": f"Bearer {API_KEY}"}
LONG = 230  # tokens: most of the tiny model's 256-token context


def metric(server: Server, name: str, labels: str = "") -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(rf"^{re.escape(name + labels)} ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def wait_idle(server: Server, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while metric(server, "kairyu_runtime_requests_running") > 0:
        assert time.monotonic() < deadline, "the server is still generating"
        time.sleep(0.05)


def wait_running(server: Server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while metric(server, "kairyu_runtime_requests_running") < 1:
        assert time.monotonic() < deadline, "the request never started generating"
        time.sleep(0.01)


def test_generate_kwargs_that_run_code_never_reach_transformers(
    server: Server, tmp_path: Path
) -> None:
    # transformers runs <dir>/custom_generate/generate.py for custom_generate=<dir> when
    # trust_remote_code is true; a hub repository id works the same way with network access.
    marker = tmp_path / "ran"
    recipe = tmp_path / "recipe" / "custom_generate"
    recipe.mkdir(parents=True)
    (recipe / "generate.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('pwned')\n"
        "def generate(model, **kwargs):\n    raise ValueError('custom code ran')\n"
    )
    attack = {"custom_generate": str(tmp_path / "recipe"), "trust_remote_code": True}
    response = httpx.post(
        f"{server.url}/chat", json={"prompt": "hi", "generate_kwargs": attack}, timeout=60
    )
    assert not marker.exists(), "the request ran code in the server"
    assert response.status_code == 400, response.text
    assert "generate_kwargs.custom_generate" in response.json()["detail"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("trust_remote_code", True),
        ("assistant_model", "gpt2"),
        ("assistant_early_exit", 1),
        ("streamer", "x"),
        ("num_beam_groups", 2),  # group beam search is run from a hub repository
        ("output_scores", True),
    ],
)
def test_generate_kwargs_off_the_allow_list_are_refused_by_name(
    server: Server, key: str, value: object
) -> None:
    response = httpx.post(
        f"{server.url}/chat",
        json={"prompt": "hi", "generate_kwargs": {key: value, "max_length": 8}},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert f"generate_kwargs.{key}" in response.json()["detail"]


def test_the_deny_list_holds_even_for_an_allow_listed_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every key /chat declares is allowed, and none is on the deny list.
    assert set(GenerateKwargs.model_fields) == sampling.GENERATE_ALLOWED
    assert not [k for k in sampling.GENERATE_ALLOWED if sampling.never_passed(k)]
    monkeypatch.setattr(
        sampling, "GENERATE_ALLOWED", sampling.GENERATE_ALLOWED | {"custom_generate"}
    )
    with pytest.raises(sampling.RequestError, match="custom_generate"):
        sampling.check_generate_kwargs({"custom_generate": "x/y"}, sampling.GenerationLimits())


def test_the_work_one_request_may_ask_for_is_bounded(server: Server) -> None:
    def chat(generate_kwargs: dict[str, object]) -> httpx.Response:
        body = {"prompt": "hi", "generate_kwargs": {"max_length": 8, **generate_kwargs}}
        return httpx.post(f"{server.url}/chat", json=body, timeout=60)

    beams = chat({"num_beams": 5, "do_sample": False})
    assert beams.status_code == 400
    assert "num_beams 5 is above this server's limit 4" in beams.json()["detail"]
    sequences = chat({"num_return_sequences": 2})
    assert sequences.status_code == 400
    assert "num_return_sequences 2" in sequences.json()["detail"]

    many = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": MODEL_NAME, "prompt": ["a"] * 9, "max_tokens": 1},
        timeout=60,
    )
    assert many.status_code == 400
    assert "at most 8" in many.json()["error"]["message"]

    # 256-token context x 32 characters: refused by its length, before tokenizing it.
    long = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": MODEL_NAME, "prompt": "a" * 9000, "max_tokens": 1},
        timeout=60,
    )
    assert long.status_code == 400
    assert "the prompt is 9000 characters" in long.json()["error"]["message"]


def _peak_rss(server: Server) -> int:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.M)
    assert match, status
    return int(match.group(1)) * 1024


def test_a_second_gzip_member_past_the_limit_is_413_not_ignored(server: Server) -> None:
    # The first member inflates to exactly the server's 4 MiB limit (a valid request padded with
    # spaces); the second adds one byte. Reading only the first would serve a body that is not
    # the one sent.
    request = json.dumps(
        {
            "inputs": [
                {"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["hi"]},
                {
                    "name": "sampling_parameters",
                    "shape": [1],
                    "datatype": "BYTES",
                    "data": [json.dumps({"max_tokens": 1})],
                },
            ]
        }
    ).encode()
    first = request + b" " * ((4 << 20) - len(request))
    response = httpx.post(
        f"{server.url}/v2/models/{MODEL_NAME}/infer",
        content=gzip.compress(first) + gzip.compress(b" "),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413, response.text
    assert "inflates to more than" in response.json()["error"]


def test_a_gzip_bomb_is_refused_without_inflating_it(server: Server) -> None:
    bomb = gzip.compress(b" " * (200 << 20), compresslevel=9)
    assert len(bomb) < 300_000
    before = _peak_rss(server)
    response = httpx.post(
        f"{server.url}/v2/models/{MODEL_NAME}/infer",
        content=bomb,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413, response.text
    assert "inflates to more than" in response.json()["error"]
    assert _peak_rss(server) - before < 50 << 20


def _kserve(server: Server, body: bytes, header_length: int | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/octet-stream"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    return httpx.post(
        f"{server.url}/v2/models/{MODEL_NAME}/infer", content=body, headers=headers, timeout=60
    )


def _json_infer(params: str) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["hi"]},
                {
                    "name": "sampling_parameters",
                    "shape": [1],
                    "datatype": "BYTES",
                    "data": [params],
                },
            ]
        }
    ).encode()


def _binary_infer(size: object, payload: bytes) -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text_input",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    return header + payload, len(header)


_NOT_UTF8 = b"\xff\xfe\xfd"


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (*_binary_infer("abc", b""), "binary_data_size"),
        (*_binary_infer(4 + len(_NOT_UTF8), struct.pack("<I", 3) + _NOT_UTF8), "not valid UTF-8"),
        (_json_infer('{"stop": 5}'), None, "bad sampling parameter stop"),
        (_json_infer('{"top_k": 1e400}'), None, "bad sampling parameter top_k"),
        (_json_infer('{"seed": 1e30}'), None, "bad sampling parameter seed"),
        (_json_infer('{"max_tokens": ' + "9" * 5000 + "}"), None, "not JSON"),
    ],
    ids=["binary_data_size", "utf-8", "stop", "top_k", "seed", "huge-int"],
)
def test_kserve_inputs_that_crashed_the_handler_are_400s(
    server: Server, body: bytes, header_length: int | None, message: str
) -> None:
    response = _kserve(server, body, header_length)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat", {"prompt": "", "generate_kwargs": {"max_length": 8}}),
        ("/chat", {"messages": [], "generate_kwargs": {"max_length": 8}}),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": "", "max_tokens": 2}),
    ],
    ids=["chat-prompt", "chat-messages", "completions"],
)
def test_an_empty_prompt_is_a_400(server: Server, path: str, body: dict[str, object]) -> None:
    response = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert "empty" in response.text


def test_an_openai_seed_torch_cannot_take_is_a_400(server: Server) -> None:
    seed = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": MODEL_NAME, "prompt": "hi", "max_tokens": 1, "seed": 2**70},
        timeout=60,
    )
    assert seed.status_code == 400, seed.text
    assert "seed" in seed.json()["error"]["message"]


def wait_worker_idle(server: Server, timeout: float = 120) -> float:
    """Seconds until the worker holds no generation (the worker itself releases each one)."""
    began = time.monotonic()
    while metric(server, "kairyu_runtime_generations_admitted") > 0:
        assert time.monotonic() - began < timeout, "the worker is still generating"
        time.sleep(0.02)
    return time.monotonic() - began


def test_a_request_whose_client_left_stops_generating(server: Server) -> None:
    wait_idle(server)
    wait_worker_idle(server)
    generated = metric(server, "kairyu_runtime_generation_tokens_total")
    params = json.dumps({"max_tokens": LONG, "min_tokens": LONG})
    body = json.dumps(
        {
            "inputs": [
                {"name": "text_input", "shape": [8], "datatype": "BYTES", "data": ["hi"] * 8},
                {
                    "name": "sampling_parameters",
                    "shape": [1],
                    "datatype": "BYTES",
                    "data": [params],
                },
            ]
        }
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"POST /v2/models/{MODEL_NAME}/infer HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        wait_running(server)
    # Eight generations of exactly LONG tokens were asked for; the caller left during the first.
    # The worker counts the tokens it made, finished or not, before it lets the job go.
    wait_worker_idle(server)
    assert metric(server, "kairyu_runtime_generation_tokens_total") - generated < LONG
    route = '{route="/v2/models/{model}/infer",status="499"}'
    assert metric(server, "kairyu_runtime_requests_total", route) >= 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bad_words_ids": [[1] * 600] * 8}, "bad_words_ids"),
        ({"eos_token_id": [2] * 5000}, "eos_token_id"),
        ({"forced_eos_token_id": [2] * 3500, "suppress_tokens": [3] * 1000}, "forced_eos_token_id"),
    ],
)
def test_token_id_lists_are_capped_in_total(
    server: Server, kwargs: dict[str, object], field: str
) -> None:
    response = httpx.post(
        f"{server.url}/chat",
        json={"prompt": "hi", "generate_kwargs": {"max_new_tokens": 1, **kwargs}},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert field in response.json()["detail"]
    assert "at most 4096" in response.json()["detail"]


def test_the_load_is_exported_under_vllm_s_names_for_autoscaling(server: Server) -> None:
    wait_idle(server)
    wait_worker_idle(server)
    labels = f'{{model_name="{MODEL_NAME}"}}'
    assert metric(server, "vllm:num_requests_waiting", labels) == 0
    body = {
        "prompt": "hi",
        "generate_kwargs": {"max_new_tokens": LONG, "min_new_tokens": LONG, "max_length": 256},
    }
    answers: list[httpx.Response] = []
    workers = [
        threading.Thread(
            target=lambda: answers.append(httpx.post(f"{server.url}/chat", json=body, timeout=120))
        )
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 30
        while metric(server, "kairyu_runtime_generations_admitted") < 3:
            assert time.monotonic() < deadline, "the three requests were never admitted"
            time.sleep(0.01)
        # One generating, two queued behind it: what KEDA's trigger reads through the activator.
        assert metric(server, "vllm:num_requests_running", labels) == 1
        assert metric(server, "vllm:num_requests_waiting", labels) == 2
    finally:
        for worker in workers:
            worker.join()
    assert [a.status_code for a in answers] == [200, 200, 200]
    wait_worker_idle(server)
    assert metric(server, "vllm:num_requests_running", labels) == 0
    assert metric(server, "vllm:num_requests_waiting", labels) == 0


def test_a_full_queue_answers_429_with_retry_after(guarded: Server) -> None:
    wait_idle(guarded)
    first: list[httpx.Response] = []
    body = {
        "prompt": "hi",
        "generate_kwargs": {"max_new_tokens": LONG, "min_new_tokens": LONG, "max_length": 256},
    }
    worker = threading.Thread(
        target=lambda: first.append(
            httpx.post(f"{guarded.url}/chat", json=body, headers=AUTH, timeout=120)
        )
    )
    worker.start()
    try:
        wait_running(guarded)
        second = httpx.post(
            f"{guarded.url}/v1/completions",
            json={"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2},
            headers=AUTH,
            timeout=60,
        )
    finally:
        worker.join()
    assert second.status_code == 429, second.text
    assert second.headers["Retry-After"] == "2"
    assert second.json()["error"]["code"] == "rate_limit_exceeded"
    assert first[0].status_code == 200
    again = httpx.post(
        f"{guarded.url}/v1/completions",
        json={"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2},
        headers=AUTH,
        timeout=60,
    )
    assert again.status_code == 200


def test_an_api_key_guards_everything_but_probes_and_metrics(guarded: Server) -> None:
    completion = {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2}
    missing = httpx.post(f"{guarded.url}/v1/completions", json=completion)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "invalid_api_key"
    wrong = httpx.post(
        f"{guarded.url}/v1/completions",
        json=completion,
        headers={"Authorization": "Bearer not-the-key"},
    )
    assert wrong.status_code == 401
    assert httpx.post(f"{guarded.url}/chat", json={"prompt": "hi"}).status_code == 401
    assert httpx.get(f"{guarded.url}/v2/models/{MODEL_NAME}").status_code == 401
    assert httpx.get(f"{guarded.url}/v1/models").status_code == 401
    allowed = httpx.post(f"{guarded.url}/v1/completions", json=completion, headers=AUTH, timeout=60)
    assert allowed.status_code == 200, allowed.text
    for probe in ("/health", "/metrics", "/v2/health/live", "/v2/health/ready"):
        assert httpx.get(f"{guarded.url}{probe}").status_code == 200, probe
    assert API_KEY not in guarded.log.read_text()


def test_a_body_over_the_limit_is_413(guarded: Server) -> None:
    big = {"model": MODEL_NAME, "prompt": "a" * 70_000, "max_tokens": 1}
    declared = httpx.post(f"{guarded.url}/v1/completions", json=big, headers=AUTH)
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:
        payload = json.dumps(big).encode()
        for i in range(0, len(payload), 8192):
            yield payload[i : i + 8192]

    chunked = httpx.post(
        f"{guarded.url}/v1/completions",
        content=chunks(),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
