"""The tuning Job of a Workspace, as KAITO builds it (pure).

One Job named after the Workspace, restartPolicy Never, on the provisioned GPU nodes:
- input: `urls` are fetched by kairyu's downloader (init container `data-downloader`, which
  refuses internal addresses), an image's /data is copied by the skopeo puller, or the user's volume
  is mounted, always at /mnt/data;
- the `tuning` container runs the entrypoint under accelerate, one process per GPU, with the
  training config at /mnt/config and the results volume at the config's output_dir;
- an output image is pushed by the same container once tuning succeeded (`&&`), with the
  imagePushSecret's docker config; an output volume is simply the results volume.
Pushing from the tuning container, rather than from KAITO's sidecar that waits for a marker file,
means a tuning run that dies without writing the marker cannot leave a sidecar waiting forever.
The pod template of a Job is immutable, so its digest is kept in an annotation and a changed
Workspace replaces the Job. The pod runs as kairyu's tuning image's non-root user with the
`restricted` Pod Security defaults, bounded emptyDirs and the settings' activeDeadlineSeconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from dataclasses import dataclass, field
from typing import Any

from kairyu_contracts import childnames
from kairyu_contracts.api import Plan
from kairyu_contracts.catalog import Preset
from kairyu_contracts.tuning import CONFIG_KEY, RESULTS_DIR
from kairyu_contracts.workloads import (
    GPU_TOLERATIONS,
    JSON,
    Owner,
    image_data_puller,
    node_affinity,
    restrict,
)
from kairyu_tuner.settings import JobSettings
from kairyu_tuner.training_config import default_config

__all__ = ["RESULTS_DIR", "Tuning", "objects"]

CONFIG_DIR = "/mnt/config"
DATA_DIR = "/mnt/data"
WEIGHTS_DIR = "/workspace/weights"
PUSH_SECRET_DIR = "/mnt/push-secret"  # noqa: S105 - a mount path, not a secret
METRICS_PORT = 5000
SPEC_ANNOTATION = "kairyu.io/job-spec"
# KAITO's env for phi-3 presets: their attention projections are fused unless named.
_PHI3_TARGET_MODULES = "k_proj,q_proj,v_proj,o_proj,gate_proj,down_proj,up_proj"


@dataclass(frozen=True)
class Tuning:
    """Everything the Job depends on, read from the Workspace, its ConfigMap and the catalog."""

    owner: Owner
    plan: Plan
    worker_nodes: list[str]
    preset: Preset
    method: str
    output_dir: str = RESULTS_DIR
    config: str | None = None
    """The user's ConfigMap; None means KAITO's default for the method is generated."""
    urls: list[str] = field(default_factory=list)
    input_image: str | None = None
    input_volume: JSON | None = None
    output_image: str | None = None
    output_volume: JSON | None = None
    push_secret: str | None = None
    image_pull_secrets: list[str] = field(default_factory=list)
    model_access_secret: str | None = None

    @property
    def name(self) -> str:
        return self.owner.name

    @property
    def config_map(self) -> str:
        return self.config or self.name + childnames.TUNING_CONFIG


def objects(tuning: Tuning, settings: JobSettings) -> list[JSON]:
    built = []
    if tuning.config is None:
        built.append(config_map(tuning))
    built.append(job(tuning, settings))
    return built


def config_map(tuning: Tuning) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": tuning.owner.metadata(tuning.config_map),
        "data": {CONFIG_KEY: default_config(tuning.method)},
    }


def command(tuning: Tuning) -> str:
    """The tuning container's shell command: tune, then push when the output is an image."""
    train = [
        "accelerate",
        "launch",
        f"--num_processes={tuning.plan.gpus_per_node}",
        "-m",
        "kairyu_tuning.train",
        f"--config={CONFIG_DIR}/{CONFIG_KEY}",
        f"--model={tuning.preset.hf_repo}",
        f"--data={DATA_DIR}",
        f"--method={tuning.method.lower()}",
        f"--cache-dir={WEIGHTS_DIR}",
        f"--metrics-port={METRICS_PORT}",
    ]
    steps = [" ".join(shlex.quote(a) for a in train)]
    if tuning.output_image:
        push = [
            "python3",
            "-m",
            "kairyu_tuning.push",
            f"--image={tuning.output_image}",
            f"--source={tuning.output_dir}",
            f"--model-name={tuning.preset.name}",
        ]
        if tuning.push_secret:
            push.append(f"--docker-config={PUSH_SECRET_DIR}/.dockerconfigjson")
        steps.append(" ".join(shlex.quote(a) for a in push))
    return " && ".join(steps)


def _downloader(tuning: Tuning, settings: JobSettings) -> JSON:
    return {
        "name": "data-downloader",
        "image": settings.tuning_image,
        "command": [
            "python3",
            "-m",
            "kairyu_tuning.download",
            f"--target={DATA_DIR}",
            f"--max-mib={settings.max_download_mib}",
            *(f"--allow-cidr={cidr}" for cidr in settings.download_allow_cidrs),
            *tuning.urls,
        ],
        "volumeMounts": [{"name": "data-volume", "mountPath": DATA_DIR}],
    }


def pod_spec(tuning: Tuning, settings: JobSettings) -> JSON:
    gpus = str(tuning.plan.gpus_per_node)
    # Bounded scratch: the weights half again plus headroom, the largest download plus headroom.
    weights = f"{math.ceil(tuning.preset.weights_gib * 1.5) + settings.scratch_gib}Gi"
    data = f"{math.ceil(settings.max_download_mib / 1024) + settings.scratch_gib}Gi"
    volumes: list[JSON] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size_limit}},
        {"name": "config-volume", "configMap": {"name": tuning.config_map}},
        {"name": "model-weights-volume", "emptyDir": {"sizeLimit": weights}},
        {"name": "data-volume", **(tuning.input_volume or {"emptyDir": {"sizeLimit": data}})},
        {
            "name": "results-volume",
            **(tuning.output_volume or {"emptyDir": {"sizeLimit": f"{settings.scratch_gib}Gi"}}),
        },
    ]
    mounts: list[JSON] = [
        {"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 - shared memory, not a temp file
        {"name": "config-volume", "mountPath": CONFIG_DIR},
        {"name": "model-weights-volume", "mountPath": WEIGHTS_DIR},
        {"name": "data-volume", "mountPath": DATA_DIR},
        {"name": "results-volume", "mountPath": tuning.output_dir},
    ]
    if tuning.push_secret:
        volumes.append({"name": "push-secret", "secret": {"secretName": tuning.push_secret}})
        mounts.append({"name": "push-secret", "mountPath": PUSH_SECRET_DIR, "readOnly": True})
    env: list[JSON] = [{"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"}]
    if tuning.preset.name.startswith("phi-3"):
        env.append({"name": "DEFAULT_TARGET_MODULES", "value": _PHI3_TARGET_MODULES})
    if tuning.model_access_secret:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": tuning.model_access_secret,
                        "key": "HF_TOKEN",
                        "optional": True,
                    }
                },
            }
        )
    init: list[JSON] = []
    if tuning.urls:
        init.append(_downloader(tuning, settings))
    elif tuning.input_image:
        init.append(
            image_data_puller(
                name="data-puller",
                image=tuning.input_image,
                puller_image=settings.data_puller_image,
                volume="data-volume",
                mount=DATA_DIR,
                target=DATA_DIR,
            )
        )
    spec: JSON = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "tuning",
                "image": settings.tuning_image,
                "command": ["/bin/sh", "-c", command(tuning)],
                "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
                "env": env,
                "resources": {
                    "requests": {"nvidia.com/gpu": gpus},
                    "limits": {"nvidia.com/gpu": gpus},
                },
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
        "tolerations": list(GPU_TOLERATIONS),
        "affinity": node_affinity(tuning.worker_nodes),
    }
    if init:
        spec["initContainers"] = init
    if tuning.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in dict.fromkeys(tuning.image_pull_secrets)]
    return restrict(spec, run_as_user=settings.run_as_user)


def job(tuning: Tuning, settings: JobSettings) -> JSON:
    template: JSON = {
        "metadata": {"labels": dict(tuning.owner.labels)},
        "spec": pod_spec(tuning, settings),
    }
    spec: JSON = {
        "backoffLimit": settings.backoff_limit,
        "activeDeadlineSeconds": settings.active_deadline_s,
        "template": template,
    }
    metadata = tuning.owner.metadata(tuning.name)
    metadata["annotations"] = {SPEC_ANNOTATION: digest(spec)}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def digest(spec: Any) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
