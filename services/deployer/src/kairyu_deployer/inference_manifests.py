"""The inference workload of a Workspace, as KAITO builds it (pure).

Runtimes: vLLM's OpenAI server (default), transformers (KAITO's runtime server), and Triton
Inference Server with its vLLM backend (kairyu's extension), whose model repository is generated
into a ConfigMap from the same plan.

A replica on one node: a Deployment of `plan.replicas` pods (one per node: each requests all of
its node's GPUs). A replica over several nodes: a StatefulSet with a headless Service, pod 0
leading.
Always a Service `<name>` (80 → 5000, and 29500 for multi-node), and the inference ConfigMap
(`inference_config.yaml`): the user's `inference.config` when named, else a default one. Pods
request the plan's GPUs per node, tolerate the GPU taints, and are pinned to exactly the nodes the
provisioner reported in `status.workerNodes`. Adapters are copied in by init containers and passed
to the runtime. Every object is owned by the Workspace, so Kubernetes removes them with it.

Generated pods run with the `restricted` Pod Security defaults
(kairyu_contracts.workloads.restrict); a user's template keeps what the user wrote and gets the
pod-level defaults it left out. A NetworkPolicy admits the serving port from the Workspace's
namespace and the namespaces the `kairyu.io/allow-ingress-from` annotation lists, and everything
else only from the Workspace's own pods (Ray and torch.distributed between the nodes of a multi-node
plan). The `kairyu.io/api-key-secret` annotation names a Secret whose `api-key` the runtime then
requires.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from kairyu_contracts import childnames
from kairyu_contracts.api import AdapterSpec, Plan
from kairyu_contracts.api.multiroleinference import ROLES
from kairyu_contracts.catalog import Preset
from kairyu_contracts.labels import (
    ALLOW_INGRESS_ANNOTATION,
    MULTIROLE_LABEL,
    PINNED_NODES_ANNOTATION,
    ROLE_LABEL,
    WORKSPACE_LABEL,
)
from kairyu_contracts.workloads import (
    GPU_TOLERATIONS,
    JSON,
    InvalidTemplateError,
    Owner,
    image_data_puller,
    node_affinity,
    pinned_nodes,
    restrict,
    template_defaults,
)
from kairyu_deployer.settings import WorkloadSettings

__all__ = ["WORKSPACE_LABEL", "Inference", "objects"]
"""Names a Secret of the Workspace's namespace whose key `api-key` clients must send."""
API_KEY_SECRET_KEY = "api-key"  # noqa: S105 - the key's name in the Secret, not a key
"""Comma-separated namespace names whose pods may call the inference port, besides the
Workspace's own namespace; `*` admits every namespace."""
API_KEY_ENV = ("KAIRYU_RUNTIME_API_KEY", "VLLM_API_KEY")
HTTP_PORT = 5000
ACTIVATOR_NAME = "kairyu-activator"
"""The chart's `app.kubernetes.io/name` of the activator's pods."""
TORCH_PORT = 29500
RAY_PORT = 6379
CONFIG_KEY = "inference_config.yaml"
CONFIG_DIR = "/mnt/config"
ADAPTER_DIR = "/mnt/adapter"
WEIGHTS_DIR = "/workspace/weights"
MODEL_REPOSITORY = "/mnt/models"
ROLE_ENV = "KAITO_INFERENCE_ROLE"
# vLLM engine arguments Triton's vLLM backend accepts in model.json; the OpenAI front end's flags
# (chat template, tool parsers) have no meaning there.
_TRITON_ENGINE_ARGS = {
    "model",
    "served_model_name",
    "dtype",
    "gpu_memory_utilization",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "max_model_len",
    "distributed_executor_backend",
    "trust_remote_code",
}
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DEFAULT_CONFIG = "kv_cache_cpu_memory_utilization: 0.5\nvllm:\n  cpu-offload-gb: 0\n"


@dataclass(frozen=True)
class Inference:
    """Everything the workload depends on, read from the Workspace and the catalog."""

    namespace: str
    name: str
    uid: str
    api_version: str
    kind: str
    plan: Plan
    worker_nodes: list[str]
    image: str
    preset: Preset | None = None
    adapters: list[AdapterSpec] = field(default_factory=list)
    config: str | None = None
    """The user's ConfigMap; None means the default one is generated."""
    model_access_secret: str | None = None
    image_pull_secrets: list[str] = field(default_factory=list)
    template: JSON | None = None
    """inference.template: the user's PodTemplateSpec, run as is (KAITO's custom model path)."""
    api_key_secret: str | None = None
    """The Secret holding the runtime's API key (annotation kairyu.io/api-key-secret)."""
    ingress_from: list[str] = field(default_factory=list)
    """Namespaces whose pods may call the model, besides its own (kairyu.io/allow-ingress-from)."""
    spare_node: bool = False
    """The provisioner reported more worker nodes than the plan's: a spare for this update
    (kairyu_provisioner.surge), so the new pod can start beside the old one."""
    pod_labels: dict[str, str] = field(default_factory=dict)
    """Labels of the Workspace its pods carry too: an InferenceSet's, which selects its pods,
    and a MultiRoleInference's (kairyu_deployer.app)."""

    @property
    def role(self) -> str | None:
        """`prefill` or `decode` for a MultiRoleInference's Workspace, else None."""
        role = self.pod_labels.get(ROLE_LABEL)
        return role if role in ROLES else None

    @property
    def multi_node(self) -> bool:
        """One replica spans several nodes (pipeline stages, or a template's count)."""
        return self.plan.node_count > self.plan.replicas

    @property
    def weights_gib(self) -> float:
        """The model's weights: the plan's figure (any Hugging Face id), else the preset's."""
        if self.plan.weights_gib is not None:
            return self.plan.weights_gib
        return self.preset.weights_gib if self.preset else 0.0

    @property
    def config_map(self) -> str:
        return self.config or self.name + childnames.INFERENCE_CONFIG

    @property
    def triton(self) -> bool:
        return self.plan.runtime == "triton"

    @property
    def model_name(self) -> str:
        """The name clients ask for: the plan's served model name, else the Workspace's."""
        for arg in self.plan.runtime_args or []:
            if arg.startswith("--served-model-name="):
                return arg.split("=", 1)[1]
        return self.name

    @property
    def owner(self) -> Owner:
        return Owner(self.namespace, self.name, self.uid, self.api_version, self.kind)

    @property
    def labels(self) -> dict[str, str]:
        return self.owner.labels


def objects(inference: Inference, settings: WorkloadSettings) -> list[JSON]:
    """The objects to apply, in order: config, services, workload."""
    built = []
    if inference.config is None:
        built.append(config_map(inference))
    if inference.triton:
        built.append(model_repository(inference))
    built.append(service(inference))
    if inference.multi_node:
        built.append(headless_service(inference))
    built.append(network_policy(inference, settings.activator_namespace))
    built.append(workload(inference, settings))
    return built


def other_names(workspace: str) -> list[tuple[str, str]]:
    """(kind, name) of every object `objects` may make for the Workspace besides its workload."""
    return [
        (kind, name)
        for kind, name in childnames.child_names(workspace)
        if kind in ("ConfigMap", "Service", "NetworkPolicy")
        and name != workspace + childnames.TUNING_CONFIG
    ]


def ingress_namespaces(annotation: str | None) -> list[str]:
    """The namespaces of `kairyu.io/allow-ingress-from`, checked.

    Raises InvalidTemplateError (reason WorkloadInvalid) for a name no namespace can have, so a typo
    shows on the Workspace instead of silently admitting nothing.
    """
    names = [n.strip() for n in (annotation or "").split(",") if n.strip()]
    for n in names:
        if n != "*" and not _DNS_LABEL.fullmatch(n):
            raise InvalidTemplateError(
                f"annotation {ALLOW_INGRESS_ANNOTATION}: {n!r} is not a namespace name "
                "(comma-separated namespace names, or *)"
            )
    return list(dict.fromkeys(names))


def network_policy(inference: Inference, activator_namespace: str | None = None) -> JSON:
    """Who may reach the inference pods.

    The serving port from the namespace and the listed ones, and from kairyu's activator (its
    pods in `activator_namespace`), which reads each pod's `/metrics` there for autoscaling;
    every port (Ray, torch.distributed)
    only from the Workspace's own pods, and for a MultiRoleInference's Workspace from the pods
    of both its roles too (NIXL's side channel and KV transfers go between prefill and decode
    pods, which belong to different Workspaces).
    """
    peers: list[JSON] = [{"podSelector": {}}]
    if "*" in inference.ingress_from:
        peers = [{"namespaceSelector": {}}]
    else:
        peers += [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": n}}}
            for n in inference.ingress_from
            if n != inference.namespace
        ]
    if activator_namespace and "*" not in inference.ingress_from:
        peers.append(
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": activator_namespace}
                },
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": ACTIVATOR_NAME}},
            }
        )
    ingress: list[JSON] = [
        {"from": peers, "ports": [{"protocol": "TCP", "port": HTTP_PORT}]},
        {"from": [{"podSelector": {"matchLabels": dict(inference.labels)}}]},
    ]
    parent = inference.pod_labels.get(MULTIROLE_LABEL)
    if inference.role is not None and parent:
        ingress.append({"from": [{"podSelector": {"matchLabels": {MULTIROLE_LABEL: parent}}}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(inference, inference.name),
        "spec": {
            "podSelector": {"matchLabels": dict(inference.labels)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def _meta(inference: Inference, name: str) -> JSON:
    return inference.owner.metadata(name)


def config_map(inference: Inference) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(inference, inference.config_map),
        "data": {CONFIG_KEY: DEFAULT_CONFIG},
    }


def triton_model(inference: Inference) -> JSON:
    """model.json of Triton's vLLM backend: the plan's engine arguments."""
    engine: JSON = {}
    for arg in inference.plan.runtime_args or []:
        key, _, value = arg.removeprefix("--").partition("=")
        key = key.replace("-", "_")
        if key in _TRITON_ENGINE_ARGS:
            engine[key] = _scalar(value) if value else True
    engine["download_dir"] = WEIGHTS_DIR
    if inference.adapters:
        engine["enable_lora"] = True
    return engine


def _scalar(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def model_repository(inference: Inference) -> JSON:
    """Triton's model repository as a ConfigMap; the volume's items lay out its directories."""
    config = (
        f'name: "{inference.model_name}"\nbackend: "vllm"\n'
        "instance_group [ { count: 1, kind: KIND_MODEL } ]\n"
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(inference, inference.name + childnames.MODEL_REPOSITORY),
        "data": {
            "config.pbtxt": config,
            "model.json": json.dumps(triton_model(inference), indent=2, sort_keys=True),
        },
    }


def service(inference: Inference) -> JSON:
    ports = [{"name": "http", "port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"}]
    selector = dict(inference.labels)
    if inference.multi_node:
        ports.append({"name": "torch", "port": TORCH_PORT, "targetPort": TORCH_PORT})
        # Only the leader serves; the other pods are pipeline stages behind it.
        selector["statefulset.kubernetes.io/pod-name"] = f"{inference.name}-0"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(inference, inference.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": ports,
            # Only ready pods serve, so an update moves traffic once the new pod is ready. A
            # multi-node leader is published before: its workers reach its torch port first.
            "publishNotReadyAddresses": inference.multi_node,
        },
    }


def headless_service(inference: Inference) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(inference, inference.name + childnames.HEADLESS),
        "spec": {
            "clusterIP": "None",
            "selector": dict(inference.labels),
            "ports": [
                {"name": "torch", "port": TORCH_PORT, "targetPort": TORCH_PORT},
                {"name": "ray", "port": RAY_PORT, "targetPort": RAY_PORT},
            ],
            "publishNotReadyAddresses": True,
        },
    }


def startup_seconds(inference: Inference, settings: WorkloadSettings) -> int:
    """How long the model may take to start: a base plus download and load time of its weights."""
    weights = inference.weights_gib
    return settings.startup_base_s + math.ceil(weights * settings.startup_s_per_gib)


def command(inference: Inference) -> str:
    """The runtime's shell command (KAITO wraps it in /bin/sh -c)."""
    args = list(inference.plan.runtime_args or [])
    if inference.triton:
        return (
            f"tritonserver --model-repository={MODEL_REPOSITORY} --http-port={HTTP_PORT} "
            "--grpc-port=8001 --metrics-port=8002"
        )
    if inference.plan.runtime == "transformers":
        launch = (
            "accelerate launch --num_processes=1 --num_machines=1 --machine_rank=0 "
            "--gpu_ids=all /workspace/tfs/inference_api.py"
        )
        # Weights fetched at start-up go to the weights volume, not the container's filesystem.
        args.append(f"--cache_dir={WEIGHTS_DIR}")
        return " ".join([launch, *(shlex.quote(a) for a in args)])
    args.append(f"--kaito-config-file={CONFIG_DIR}/{CONFIG_KEY}")
    args.append(f"--download-dir={WEIGHTS_DIR}")
    if inference.adapters:
        modules = " ".join(
            shlex.quote(f"{a.source.name}={ADAPTER_DIR}/{a.source.name}")
            for a in inference.adapters
        )
        args.append(f"--enable-lora --lora-modules {modules}")
    serve = "python3 /workspace/vllm/inference_api.py " + " ".join(
        a if a.startswith("--enable-lora") else shlex.quote(a) for a in args
    )
    if not inference.multi_node:
        return serve
    leader = f"{inference.name}-0.{inference.name}-headless.{inference.namespace}.svc.cluster.local"
    size = inference.plan.node_count
    return (
        f'if [ "${{POD_INDEX}}" = "0" ]; then '
        f"/workspace/vllm/multi-node-serving.sh leader --ray_cluster_size={size} "
        f"--ray_port={RAY_PORT}; {serve}; "
        f"else /workspace/vllm/multi-node-serving.sh worker --ray_address={leader} "
        f"--ray_port={RAY_PORT}; fi"
    )


def _probes(inference: Inference, settings: WorkloadSettings) -> JSON:
    path = "/v2/health/ready" if inference.triton else "/health"
    health = {"httpGet": {"path": path, "port": HTTP_PORT}}
    return {
        "startupProbe": {
            **health,
            "periodSeconds": 10,
            "failureThreshold": math.ceil(startup_seconds(inference, settings) / 10),
        },
        "livenessProbe": {**health, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {**health, "periodSeconds": 10},
    }


def _adapter_init(adapter: AdapterSpec, settings: WorkloadSettings) -> JSON:
    name = adapter.source.name
    return image_data_puller(
        name=f"puller-{name}",
        image=adapter.source.image or "",
        puller_image=settings.adapter_puller_image,
        volume="adapter-volume",
        mount=ADAPTER_DIR,
        target=f"{ADAPTER_DIR}/{name}",
    )


def runtime_image(inference: Inference, settings: WorkloadSettings) -> str:
    """The runtime's image: Triton's, or kairyu's per-runtime image when set, else the preset's."""
    if inference.triton:
        return settings.triton_image
    if inference.plan.runtime == "transformers":
        return settings.transformers_image or inference.image
    return settings.vllm_image or inference.image


def pod_spec(inference: Inference, settings: WorkloadSettings) -> JSON:
    """The pod template's spec for a preset model."""
    gpus = str(inference.plan.gpus_per_node)
    env: list[JSON] = [{"name": "VLLM_USE_FLASHINFER_SAMPLER", "value": "0"}]
    if inference.model_access_secret:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": inference.model_access_secret,
                        "key": "HF_TOKEN",
                        "optional": True,
                    }
                },
            }
        )
    if inference.api_key_secret:
        # Not optional: a pod without its key would serve everyone; it waits for the Secret.
        ref = {"secretKeyRef": {"name": inference.api_key_secret, "key": API_KEY_SECRET_KEY}}
        env += [{"name": n, "valueFrom": dict(ref)} for n in API_KEY_ENV]
    env += [{"name": a.source.name, "value": a.strength or "1.0"} for a in inference.adapters]
    if inference.role is not None:
        # KAITO's contract with its runtime: the role makes the vLLM wrapper connect the KV
        # cache over NIXL (kairyu_runtime.vllm_entry), reachable at the pod's own address.
        env += [
            {"name": ROLE_ENV, "value": inference.role},
            {
                "name": "VLLM_NIXL_SIDE_CHANNEL_HOST",
                "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
            },
        ]
    if inference.multi_node:
        env.append(
            {
                "name": "POD_INDEX",
                "valueFrom": {
                    "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
                },
            }
        )
    scratch = f"{settings.scratch_gib}Gi"
    volumes: list[JSON] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size_limit}},
        {"name": "config-volume", "configMap": {"name": inference.config_map}},
        {
            "name": "model-weights-volume",
            "emptyDir": {"sizeLimit": weights_limit(inference, settings)},
        },
        {"name": "adapter-volume", "emptyDir": {"sizeLimit": scratch}},
    ]
    mounts: list[JSON] = [
        {"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 - shared memory for NCCL, not a temp file
        {"name": "config-volume", "mountPath": CONFIG_DIR},
        {"name": "model-weights-volume", "mountPath": WEIGHTS_DIR},
        {"name": "adapter-volume", "mountPath": ADAPTER_DIR},
    ]
    if inference.triton:
        name = inference.model_name
        volumes.append(
            {
                "name": "model-repository",
                "configMap": {
                    "name": inference.name + childnames.MODEL_REPOSITORY,
                    "items": [
                        {"key": "config.pbtxt", "path": f"{name}/config.pbtxt"},
                        {"key": "model.json", "path": f"{name}/1/model.json"},
                    ],
                },
            }
        )
        mounts.append({"name": "model-repository", "mountPath": MODEL_REPOSITORY})
    init: list[JSON] = []
    for adapter in inference.adapters:
        if adapter.source.image:
            init.append(_adapter_init(adapter, settings))
        elif adapter.source.volume_source:
            volume = f"adapter-{adapter.source.name}"
            volumes.append({"name": volume, **adapter.source.volume_source})
            mounts.append({"name": volume, "mountPath": f"{ADAPTER_DIR}/{adapter.source.name}"})
    container = {
        "name": inference.name,
        "image": runtime_image(inference, settings),
        "command": ["/bin/sh", "-c"],
        "args": [command(inference)],
        "ports": [{"name": "http", "containerPort": HTTP_PORT}],
        "env": env,
        "resources": {"requests": {"nvidia.com/gpu": gpus}, "limits": {"nvidia.com/gpu": gpus}},
        "volumeMounts": mounts,
        **_probes(inference, settings),
    }
    spec: JSON = {
        "containers": [container],
        "volumes": volumes,
        "tolerations": list(GPU_TOLERATIONS),
        "affinity": node_affinity(inference.worker_nodes),
    }
    if init:
        spec["initContainers"] = init
    secrets = inference.image_pull_secrets + [
        s for a in inference.adapters for s in (a.source.image_pull_secrets or [])
    ]
    if secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in dict.fromkeys(secrets)]
    return restrict(spec, run_as_user=run_as_user(inference, settings))


def run_as_user(inference: Inference, settings: WorkloadSettings) -> int | None:
    """The non-root UID to run as when the runtime image is kairyu's own, else None.

    Only kairyu's transformers image is known to run as its USER (1000) with every path it writes
    under a volume; vLLM's and Triton's upstream images run as root and write caches under $HOME.
    """
    if inference.plan.runtime == "transformers" and settings.transformers_image:
        return settings.run_as_user
    return None


def weights_limit(inference: Inference, settings: WorkloadSettings) -> str:
    """The weights volume's sizeLimit: a node's disk is not the limit.

    The weights, half again (a repository often holds a second format), plus the scratch headroom.
    """
    weights = inference.weights_gib
    return f"{math.ceil(weights * 1.5) + settings.scratch_gib}Gi"


def _template_spec(inference: Inference) -> JSON:
    """The user's pod template, with the Workspace's placement added (KAITO's template path)."""
    spec = _object((inference.template or {}).get("spec"), "inference.template.spec")
    if not spec:
        raise InvalidTemplateError(
            "inference.template.spec is empty: it needs at least a container"
        )
    tolerations = spec.get("tolerations") or []
    if not isinstance(tolerations, list):
        raise InvalidTemplateError("inference.template.spec.tolerations must be a list")
    spec["affinity"] = node_affinity(inference.worker_nodes)
    spec["tolerations"] = [*tolerations, *GPU_TOLERATIONS]
    return template_defaults(spec)


def _object(value: Any, where: str) -> JSON:
    """`value` as an object (None is an empty one); InvalidTemplateError names `where` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidTemplateError(f"{where} must be an object, not {type(value).__name__}")
    return dict(value)


def _template_labels(inference: Inference) -> dict[str, str]:
    template = _object(inference.template, "inference.template")
    labels = _object(
        _object(template.get("metadata"), "inference.template.metadata").get("labels"),
        "inference.template.metadata.labels",
    )
    if not all(isinstance(v, str) for v in labels.values()):
        raise InvalidTemplateError("inference.template.metadata.labels' values must be strings")
    return labels


def workload(inference: Inference, settings: WorkloadSettings) -> JSON:
    """A Deployment of single-node replicas, a StatefulSet for one replica over several nodes.

    Raises InvalidTemplateError for a user template that is not a pod template.
    """
    template_labels = _template_labels(inference) if inference.template is not None else {}
    pod_labels = {**template_labels, **inference.pod_labels, **inference.labels}
    spec = (
        _template_spec(inference)
        if inference.template is not None
        else pod_spec(inference, settings)
    )
    template = {"metadata": {"labels": pod_labels}, "spec": spec}
    selector = {"matchLabels": dict(inference.labels)}
    if inference.multi_node:
        return {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta(inference, inference.name),
            "spec": {
                "replicas": inference.plan.node_count,
                "serviceName": inference.name + childnames.HEADLESS,
                "podManagementPolicy": "Parallel",
                "selector": selector,
                "template": template,
            },
        }
    metadata = _meta(inference, inference.name)
    metadata["annotations"] = {PINNED_NODES_ANNOTATION: ",".join(sorted(inference.worker_nodes))}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": inference.plan.replicas,
            "selector": selector,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": rolling_update(inference)},
            "template": template,
        },
    }


def rolling_update(inference: Inference) -> JSON:
    """How a template change rolls out over the replicas' nodes.

    One replica with a spare node (the provisioner adds one for the update of a serving
    Workspace, kairyu_provisioner.surge): the new pod starts there before the old one stops, so
    the Workspace keeps serving. One replica without a spare: the old pod holds the node's GPUs,
    so a new one could never start beside it; it is replaced in place, with downtime (the
    provisioner's ResourceReady message says so). Several: each pod takes a whole node and the
    plan has no spare one; one replica at a time is replaced while the others serve.
    """
    if inference.plan.replicas > 1:
        return {"maxSurge": 0, "maxUnavailable": 1}
    if inference.spare_node:
        return {"maxSurge": 1, "maxUnavailable": 0}
    return {"maxSurge": 0, "maxUnavailable": 1}


def kept_nodes(inference: Inference, current: JSON | None) -> list[str]:
    """The nodes to pin the pods to: the workload's current ones when they cover the new plan's.

    Scaling down frees some of the nodes the pods are pinned to; keeping the pin list unchanged
    keeps the pod template unchanged, so the Deployment only removes pods instead of rolling
    every replica (which, with no spare node, would restart the replica that stays).
    """
    current_nodes = pinned_nodes(current)
    if current_nodes and set(inference.worker_nodes) <= set(current_nodes):
        return current_nodes
    return list(inference.worker_nodes)


def runtime_status(inference: Inference, settings: WorkloadSettings) -> JSON:
    """`status.runtime`: the engine, its image's tag, and the weights' quantization."""
    if inference.template is not None:
        return {"engine": "template"}
    image = runtime_image(inference, settings)
    last = image.rsplit("/", 1)[-1].split("@", 1)[0]
    status: JSON = {"engine": inference.plan.runtime}
    if ":" in last:
        status["version"] = last.split(":", 1)[1]
    if inference.plan.quantization:
        status["quantization"] = inference.plan.quantization
    return status
