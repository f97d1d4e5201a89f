"""The adapter goes to a real OCI registry (CNCF distribution) and comes back byte-identical."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import oras.client
import oras.decorator
import pytest

from kairyu_tuning import push
from kairyu_tuning.failure import StepError

REPO_ROOT = Path(__file__).resolve().parents[3]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def registry_binary() -> Path:
    if directory := os.environ.get("KAIRYU_REGISTRY_DIR"):
        return Path(directory) / "registry"
    built = subprocess.run(
        ["bash", str(REPO_ROOT / "tools/registry/build.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(built.stdout.strip().splitlines()[-1]) / "registry"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("registry")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = root / "config.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen(
        [str(registry_binary()), "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://{address}/v2/").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail((root / "registry.log").read_text())
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    source = tmp_path / "results"
    source.mkdir()
    (source / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    (source / "adapter_model.safetensors").write_bytes(os.urandom(200_000))
    (source / "fine_tuning_completed.txt").write_text("done\n")
    (source / "training_log.json").write_text("[]")  # not part of the image
    return source


def pull(address: str, repository: str, tag: str) -> tuple[dict[str, object], bytes, bytes]:
    """Manifest, config and layer, straight from the registry API, each checked by digest."""
    base = f"http://{address}/v2/{repository}"
    manifest = httpx.get(f"{base}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}).json()

    def blob(descriptor: dict[str, str]) -> bytes:
        data = httpx.get(f"{base}/blobs/{descriptor['digest']}", follow_redirects=True).content
        assert "sha256:" + hashlib.sha256(data).hexdigest() == descriptor["digest"]
        return data

    (layer,) = manifest["layers"]
    return manifest, blob(manifest["config"]), blob(layer)


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
    assert manifest["layers"][0]["mediaType"] == push.LAYER_MEDIA_TYPE  # type: ignore[index]

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
