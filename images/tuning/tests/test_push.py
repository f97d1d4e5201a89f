"""The adapter goes to a real OCI registry (CNCF distribution) and comes back byte-identical."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import socket
import tarfile
from pathlib import Path

import oras.client
import oras.decorator
import pytest
from oci import OCI_MANIFEST, pull, registry

from kairyu_tuning import push

__all__ = ["registry"]  # the fixture, used by name
from kairyu_tuning.failure import StepError


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    source = tmp_path / "results"
    source.mkdir()
    (source / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    (source / "adapter_model.safetensors").write_bytes(os.urandom(200_000))
    (source / "fine_tuning_completed.txt").write_text("done\n")
    (source / "training_log.json").write_text("[]")  # not part of the image
    return source


def test_pushed_adapter_pulls_back_byte_identical(registry: str, adapter: Path) -> None:
    image = f"{registry}/adapters/phi-3-tuned:0.0.1"
    push.main(
        [
            f"--image={image}",
            f"--source={adapter}",
            "--model-name=phi-3-mini-4k-instruct",
            "--insecure",
        ]
    )
    manifest, config, layer = pull(registry, "adapters/phi-3-tuned", "0.0.1")
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["annotations"] == {"sh.kaito.model.name": "phi-3-mini-4k-instruct"}
    assert manifest["layers"][0]["mediaType"] == push.LAYER_MEDIA_TYPE

    uncompressed = gzip.decompress(layer)
    image_config = json.loads(config)
    assert image_config["rootfs"]["diff_ids"] == [
        "sha256:" + hashlib.sha256(uncompressed).hexdigest()
    ]
    with tarfile.open(fileobj=io.BytesIO(uncompressed)) as tar:
        names = tar.getnames()
        contents = {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }
    assert names == ["data", "data/adapter_config.json", "data/adapter_model.safetensors"]
    for name in push.ADAPTER_FILES:
        assert contents[f"data/{name}"] == (adapter / name).read_bytes()


def test_the_same_adapter_gives_the_same_digest(registry: str, adapter: Path) -> None:
    for tag in ("a", "b"):
        push.push(
            push.build(adapter), f"{registry}/adapters/same:{tag}", model_name="m", insecure=True
        )
    first, _, _ = pull(registry, "adapters/same", "a")
    second, _, _ = pull(registry, "adapters/same", "b")
    assert first["layers"] == second["layers"]
    assert first["config"] == second["config"]


def test_nothing_is_pushed_without_the_completion_marker(adapter: Path) -> None:
    (adapter / "fine_tuning_completed.txt").unlink()
    with pytest.raises(StepError, match="tuning did not complete"):
        push.build(adapter)


def test_an_unreachable_registry_fails_with_the_reason(
    adapter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # oras-py retries a failed request 5 times over about two minutes; the waits are skipped here.
    monkeypatch.setattr(oras.decorator.time, "sleep", lambda _: None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StepError, match=r"pushing 127\.0\.0\.1"):
        push.push(push.build(adapter), f"127.0.0.1:{port}/x/y:1", model_name="m", insecure=True)
