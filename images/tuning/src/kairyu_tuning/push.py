"""Push the tuned adapter as an OCI image that the inference side can pull.

The image is what KAITO's pusher makes and what the deployer's adapter puller expects: one
gzipped tar layer holding `data/adapter_config.json` and `data/adapter_model.safetensors`, an OCI
image config whose rootfs lists that layer, and the annotation `sh.kaito.model.name`. The layer is
built deterministically (fixed times and owners, sorted names), so pushing the same adapter twice
gives the same digest. Registry I/O is oras-py's; credentials come from the imagePushSecret's
docker config.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from oras.client import OrasClient

from kairyu_tuning.failure import StepError, fail

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
COMPLETION_MARKER = "fine_tuning_completed.txt"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MODEL_ANNOTATION = "sh.kaito.model.name"


@dataclass(frozen=True)
class Artifact:
    layer: bytes
    diff_id: str
    config: bytes


def build(source: Path) -> Artifact:
    """The layer and image config for the adapter in `source`."""
    if not (source / COMPLETION_MARKER).is_file():
        raise StepError(f"{source} has no {COMPLETION_MARKER}: tuning did not complete")
    missing = [name for name in ADAPTER_FILES if not (source / name).is_file()]
    if missing:
        raise StepError(f"{source} lacks {', '.join(missing)}")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_entry("data", size=0, directory=True))
        for name in ADAPTER_FILES:
            data = (source / name).read_bytes()
            tar.addfile(_entry(f"data/{name}", size=len(data)), io.BytesIO(data))
    uncompressed = raw.getvalue()
    layer = gzip.compress(uncompressed, mtime=0)
    diff_id = "sha256:" + hashlib.sha256(uncompressed).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "config": {},
    }
    return Artifact(layer, diff_id, json.dumps(config, sort_keys=True).encode())


def _entry(name: str, *, size: int, directory: bool = False) -> tarfile.TarInfo:
    """A tar entry with nothing that varies between builds (time, owner)."""
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    return info


def push(
    artifact: Artifact,
    image: str,
    *,
    model_name: str,
    docker_config: Path | None = None,
    insecure: bool = False,
) -> str:
    """Push; the manifest's location as the registry reports it."""
    client = OrasClient(insecure=insecure)
    with tempfile.TemporaryDirectory() as scratch:
        layer = Path(scratch) / "adapter.tar.gz"
        layer.write_bytes(artifact.layer)
        config = Path(scratch) / "config.json"
        config.write_bytes(artifact.config)
        try:
            response = client.push(
                target=image,
                files=[f"{layer}:{LAYER_MEDIA_TYPE}"],
                manifest_config=f"{config}:{CONFIG_MEDIA_TYPE}",
                manifest_annotations={MODEL_ANNOTATION: model_name},
                config_path=str(docker_config) if docker_config else None,
                disable_path_validation=True,
                quiet=True,
            )
        except (OSError, ValueError) as err:
            raise StepError(f"pushing {image} failed: {err}") from None
    return str(response.headers.get("Location", image))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kairyu_tuning.push", description=__doc__)
    parser.add_argument("--image", required=True)
    parser.add_argument("--source", type=Path, default=Path("/mnt/results"))
    parser.add_argument("--model-name", default="")
    parser.add_argument("--docker-config", type=Path, default=None)
    parser.add_argument("--insecure", action="store_true", help="plain HTTP (a local registry)")
    args = parser.parse_args(argv)
    try:
        artifact = build(args.source)
        push(
            artifact,
            args.image,
            model_name=args.model_name,
            docker_config=args.docker_config,
            insecure=args.insecure,
        )
    except StepError as err:
        fail(f"adapter push failed: {err}")
    print(f"pushed {args.image} (layer {artifact.diff_id})", flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
