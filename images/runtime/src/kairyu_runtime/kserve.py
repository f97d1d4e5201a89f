"""The Open Inference (KServe v2) wire format, with Triton's binary tensor extension.

tritonclient sends tensors as binary by default: the body is a JSON header of
`Inference-Header-Content-Length` bytes followed by the raw tensors in input order, and BYTES
elements are each a 4-byte little-endian length and the bytes. It asks for binary outputs the same
way. Both forms are decoded and encoded here, without a model, so the server's handler stays thin.
The tensors mirror the Triton vLLM backend's model (text_input, sampling_parameters, stream,
exclude_input_in_output → text_output), so a client written for Triton + vLLM works unchanged.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

HEADER_LENGTH = "Inference-Header-Content-Length"
_LEN = struct.Struct("<I")


class ProtocolError(ValueError):
    """A malformed inference request; answered with 400 and {"error": message}."""


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    shape: list[int]
    datatype: str
    data: Any = None
    parameters: dict[str, Any] = Field(default_factory=dict)


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = None
    inputs: list[TensorSpec]
    outputs: list[OutputSpec] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Decoded:
    request: InferRequest
    tensors: dict[str, list[Any]] = field(default_factory=dict)

    def texts(self, name: str, *, required: bool = False) -> list[str]:
        values = self.tensors.get(name)
        if values is None:
            if required:
                raise ProtocolError(f"input {name} is required")
            return []
        texts = []
        for value in values:
            if isinstance(value, bytes):
                try:
                    texts.append(value.decode())
                except UnicodeDecodeError as err:
                    raise ProtocolError(f"input {name} is not valid UTF-8: {err}") from None
            elif isinstance(value, str):
                texts.append(value)
            else:
                raise ProtocolError(f"input {name} holds {type(value).__name__}, not a string")
        return texts

    def flag(self, name: str) -> bool:
        values = self.tensors.get(name) or [False]
        return bool(values[0])


INPUTS: list[dict[str, Any]] = [
    {"name": "text_input", "datatype": "BYTES", "shape": [1]},
    {"name": "stream", "datatype": "BOOL", "shape": [1], "optional": True},
    {"name": "sampling_parameters", "datatype": "BYTES", "shape": [1], "optional": True},
    {"name": "exclude_input_in_output", "datatype": "BOOL", "shape": [1], "optional": True},
]
OUTPUTS: list[dict[str, Any]] = [{"name": "text_output", "datatype": "BYTES", "shape": [-1]}]
_DATATYPES = {i["name"]: i["datatype"] for i in INPUTS}


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensors after it."""
    if header_length is None:
        return body, b""
    try:
        split = int(header_length)
    except ValueError:
        raise ProtocolError(f"{HEADER_LENGTH} is not a number") from None
    if not 0 <= split <= len(body):
        raise ProtocolError(f"{HEADER_LENGTH} {split} is outside the {len(body)}-byte body")
    return body[:split], body[split:]


def decode(body: bytes, header_length: str | None) -> Decoded:
    header, binary = _split(body, header_length)
    try:
        request = InferRequest.model_validate_json(header)
    except ValidationError as err:
        raise ProtocolError(f"invalid inference request: {_first_error(err)}") from None
    decoded = Decoded(request)
    offset = 0
    for spec in request.inputs:
        expected = _DATATYPES.get(spec.name)
        if expected is None:
            raise ProtocolError(
                f"unexpected input {spec.name}; this model takes {', '.join(_DATATYPES)}"
            )
        if spec.datatype != expected:
            raise ProtocolError(f"input {spec.name} must be {expected}, not {spec.datatype}")
        count = math.prod(spec.shape) if spec.shape else 1
        size = spec.parameters.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ProtocolError(
                    f"input {spec.name}: binary_data_size must be a byte count, not {size!r:.40}"
                )
            chunk = binary[offset : offset + size]
            if len(chunk) != size:
                raise ProtocolError(f"input {spec.name}: the body ends before its binary data")
            offset += size
            values = _from_binary(spec.name, spec.datatype, chunk)
        else:
            if spec.data is None:
                raise ProtocolError(f"input {spec.name} has neither data nor binary_data_size")
            values = _flatten(spec.data)
            if spec.datatype == "BOOL" and not all(isinstance(v, bool) for v in values):
                raise ProtocolError(f"input {spec.name} must hold true or false")
        if len(values) != count:
            raise ProtocolError(
                f"input {spec.name}: shape {spec.shape} needs {count} elements, got {len(values)}"
            )
        decoded.tensors[spec.name] = values
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes of binary data belong to no input")
    return decoded


def encode(
    *,
    model: str,
    request: InferRequest,
    texts: list[str],
) -> tuple[bytes, dict[str, str]]:
    """The response body and extra headers, binary when the request asked for it."""
    wanted = request.outputs or [OutputSpec(name="text_output")]
    unknown = [o.name for o in wanted if o.name != "text_output"]
    if unknown:
        raise ProtocolError(f"unknown output {unknown[0]}; this model returns text_output")
    spec = wanted[0]
    binary = bool(
        spec.parameters.get("binary_data", request.parameters.get("binary_data_output", False))
    )
    output: dict[str, Any] = {"name": "text_output", "datatype": "BYTES", "shape": [len(texts)]}
    payload = b""
    if binary:
        payload = b"".join(_LEN.pack(len(b)) + b for b in (t.encode() for t in texts))
        output["parameters"] = {"binary_data_size": len(payload)}
    else:
        output["data"] = texts
    document: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": [output]}
    if request.id is not None:
        document["id"] = request.id
    header = json.dumps(document, separators=(",", ":")).encode()
    if not binary:
        return header, {}
    return header + payload, {HEADER_LENGTH: str(len(header))}


def model_metadata(model: str) -> dict[str, Any]:
    return {
        "name": model,
        "versions": ["1"],
        "platform": "kairyu_transformers",
        "inputs": [{k: v for k, v in i.items() if k != "optional"} for i in INPUTS],
        "outputs": OUTPUTS,
    }


def _from_binary(name: str, datatype: str, chunk: bytes) -> list[Any]:
    if datatype == "BOOL":
        return [b != 0 for b in chunk]
    values: list[Any] = []
    offset = 0
    while offset < len(chunk):
        if offset + _LEN.size > len(chunk):
            raise ProtocolError(f"input {name}: truncated BYTES element length")
        (size,) = _LEN.unpack_from(chunk, offset)
        offset += _LEN.size
        if offset + size > len(chunk):
            raise ProtocolError(f"input {name}: a BYTES element runs past its data")
        values.append(chunk[offset : offset + size])
        offset += size
    return values


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [v for item in data for v in _flatten(item)]
    return [data]


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])
