"""A local OCI registry (CNCF distribution, built from the Go module proxy) and reading it back.

`registry` is a session fixture; test modules import it by name.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REPO_ROOT = Path(__file__).resolve().parents[3]


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


def pull(address: str, repository: str, tag: str) -> tuple[dict[str, Any], bytes, bytes]:
    """Manifest, config and layer, straight from the registry API, each checked by digest."""
    base = f"http://{address}/v2/{repository}"
    manifest = httpx.get(f"{base}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}).json()

    def blob(descriptor: dict[str, str]) -> bytes:
        data = httpx.get(f"{base}/blobs/{descriptor['digest']}", follow_redirects=True).content
        assert "sha256:" + hashlib.sha256(data).hexdigest() == descriptor["digest"]
        return data

    (layer,) = manifest["layers"]
    return manifest, blob(manifest["config"]), blob(layer)


@pytest.fixture(scope="session")
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
