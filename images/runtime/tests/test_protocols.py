"""The wire formats and request mappings, without a model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import serialize_byte_tensor

from kairyu_runtime import kserve, sampling
from kairyu_runtime.adapters import AdapterError, discover
from kairyu_runtime.sampling import GenerateRequest, RequestError
from kairyu_runtime.stops import StopTrimmer


def _one(tensor: dict[str, object]) -> bytes:
    return json.dumps({"inputs": [tensor]}).encode()


_TRUNCATED = _one(
    {
        "name": "text_input",
        "shape": [1],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": 8},
    }
)


def _serialized(texts: list[bytes]) -> bytes:
    """tritonclient's own encoding of a BYTES tensor (what it sends with binary_data=True)."""
    return bytes(serialize_byte_tensor(np.array(texts, dtype=object)).item())


def _binary_request(texts: list[bytes]) -> tuple[bytes, str]:
    payload = _serialized(texts)
    flag = np.array([True], dtype=bool).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text_input",
                    "shape": [len(texts)],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(payload)},
                },
                {
                    "name": "exclude_input_in_output",
                    "shape": [1],
                    "datatype": "BOOL",
                    "parameters": {"binary_data_size": 1},
                },
            ],
            "outputs": [{"name": "text_output", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + payload + flag, str(len(header))


def test_binary_tensors_as_tritonclient_serialises_them() -> None:
    body, length = _binary_request(["héllo".encode(), b"", b"world"])
    decoded = kserve.decode(body, length)
    assert decoded.texts("text_input") == ["héllo", "", "world"]
    assert decoded.flag("exclude_input_in_output") is True


def test_binary_output_round_trips() -> None:
    body, length = _binary_request([b"x"])
    request = kserve.decode(body, length).request
    payload, headers = kserve.encode(model="m", request=request, texts=["ünï", "b"])
    split = int(headers[kserve.HEADER_LENGTH])
    header = json.loads(payload[:split])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == len(payload) - split
    assert _serialized(["ünï".encode(), b"b"]) == payload[split:]


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (b"{", None, "invalid inference request"),
        (
            _one({"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}),
            None,
            "unexpected input x",
        ),
        (
            _one({"name": "text_input", "shape": [2], "datatype": "BYTES", "data": ["a"]}),
            None,
            "needs 2 elements",
        ),
        (
            _one({"name": "text_input", "shape": [1], "datatype": "INT32", "data": [1]}),
            None,
            "must be BYTES",
        ),
        (
            _one({"name": "text_input", "shape": [1], "datatype": "BYTES"}),
            None,
            "neither data",
        ),
        (b"{}", "99", "outside"),
        (
            _TRUNCATED + b"\x05\x00\x00\x00ab",
            str(len(_TRUNCATED)),
            "ends before",
        ),
    ],
)
def test_malformed_requests_are_explained(body: bytes, length: str | None, message: str) -> None:
    with pytest.raises(kserve.ProtocolError, match=message):
        kserve.decode(body, length)


def test_stop_strings_split_across_deltas() -> None:
    trimmer = StopTrimmer(["STOP"])
    out = [trimmer.feed(d) for d in ["hello S", "T", "OP and more"]]
    assert "".join(out) == "hello "
    assert trimmer.stopped
    assert trimmer.finish() == ""


def test_held_back_text_is_released_when_it_is_not_a_stop() -> None:
    trimmer = StopTrimmer(["STOP"])
    assert trimmer.feed("a ST") == "a "
    assert trimmer.feed("ART") == "START"
    assert trimmer.feed("x S") == "x "
    assert trimmer.finish() == "S"


def test_greedy_when_temperature_is_zero() -> None:
    request = sampling.from_openai("p", max_tokens=5, temperature=0, top_p=0.9, stop="x", seed=None)
    assert request.kwargs == {"do_sample": False, "max_new_tokens": 5}
    assert request.stop == ["x"]


def test_kserve_sampling_parameters() -> None:
    request = sampling.from_kserve("p", '{"max_tokens": 7, "temperature": 0.5, "top_k": 3}')
    assert request.kwargs == {
        "do_sample": True,
        "temperature": 0.5,
        "top_k": 3,
        "max_new_tokens": 7,
    }
    assert sampling.from_kserve("p", None).kwargs["max_new_tokens"] == 16
    with pytest.raises(RequestError, match="not JSON"):
        sampling.from_kserve("p", "{")
    with pytest.raises(RequestError, match="bad sampling parameter"):
        sampling.from_kserve("p", '{"max_tokens": "many"}')


def test_token_budget_against_the_context() -> None:
    default = GenerateRequest("p")
    assert (
        sampling.token_budget(prompt_tokens=250, request=default, context=256, default=32)[
            "max_new_tokens"
        ]
        == 6
    )
    explicit = sampling.from_openai(
        "p", max_tokens=10, temperature=0, top_p=None, stop=None, seed=None
    )
    with pytest.raises(RequestError, match="10 more were requested"):
        sampling.token_budget(prompt_tokens=250, request=explicit, context=256, default=32)
    with pytest.raises(RequestError, match="context is 256"):
        sampling.token_budget(prompt_tokens=256, request=default, context=256, default=32)


def test_adapters_and_their_strengths(tmp_path: Path) -> None:
    for name in ("b", "a"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text("{}")
    (tmp_path / "not-an-adapter").mkdir()
    found = discover(tmp_path, {"a": "0.5"})
    assert [(a.name, a.strength) for a in found] == [("a", 0.5), ("b", 1.0)]
    with pytest.raises(AdapterError, match="not a number"):
        discover(tmp_path, {"a": "lots"})
    with pytest.raises(AdapterError, match=">= 0"):
        discover(tmp_path, {"b": "-1"})


def test_once_loaded_the_server_cannot_reach_a_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants  # noqa: PLC0415 - its import-time copy is what is tested
    from huggingface_hub import get_session  # noqa: PLC0415
    from huggingface_hub.errors import OfflineModeIsEnabled  # noqa: PLC0415

    from kairyu_runtime import engine  # noqa: PLC0415 - torch: only this test needs it

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # restored after
    environ: dict[str, str] = {}
    engine.seal_hubs(environ)
    assert environ == {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    with pytest.raises(OfflineModeIsEnabled):
        get_session().get("https://huggingface.co/api/models/gpt2")


def test_stop_sequences_are_bounded() -> None:
    with pytest.raises(RequestError, match="at most 256 characters"):
        sampling.from_openai(
            "p", max_tokens=5, temperature=0, top_p=None, stop=["x" * 257], seed=None
        )
    assert sampling.stop_list(["x" * 256]) == ["x" * 256]
