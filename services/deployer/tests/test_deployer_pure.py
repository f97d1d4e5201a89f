"""The deployer's pure parts: the workload KAITO would build, and InferenceReady from pods."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from typing import Any

import pytest

from kairyu_contracts.api import AdapterSpec, Plan
from kairyu_contracts.catalog import load_catalog
from kairyu_contracts.objectstate import trim
from kairyu_contracts.workloads import NameTakenError, WorkloadError, check_owned
from kairyu_deployer import inference_manifests
from kairyu_deployer.inference_status import (
    InferenceVerdict,
    inference_verdict,
    replicas_status,
    succeeded,
)
from kairyu_deployer.settings import WorkloadSettings

SETTINGS = WorkloadSettings()
PHI = load_catalog().preset("phi-3-mini-4k-instruct")
LLAMA = load_catalog().preset("llama-3.3-70b-instruct")


def plan(**overrides: Any) -> Plan:
    values: dict[str, Any] = {
        "instance_type": "Standard_NC6s_v3",
        "node_count": 1,
        "gpus_per_node": 1,
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "dtype": "float16",
        "runtime": "vllm",
        "runtime_args": ["--model=microsoft/Phi-3-mini-4k-instruct", "--dtype=float16"],
    }
    return Plan.model_validate(values | overrides)


def inference(**overrides: Any) -> inference_manifests.Inference:
    values: dict[str, Any] = {
        "namespace": "ml",
        "name": "phi",
        "uid": "u-1",
        "api_version": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "plan": plan(),
        "worker_nodes": ["node-a"],
        "image": "mcr.microsoft.com/aks/kaito/kaito-base:0.5.0",
        "preset": PHI,
    }
    return inference_manifests.Inference(**(values | overrides))


def adapter(name: str, **source: Any) -> AdapterSpec:
    return AdapterSpec.model_validate({"source": {"name": name, **source}, "strength": "0.5"})


def kinds(objs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objs]


def test_one_node_is_a_deployment_with_a_service_and_the_default_config() -> None:
    objs = inference_manifests.objects(inference(), SETTINGS)
    assert kinds(objs) == [
        ("ConfigMap", "phi-inference-config"),
        ("Service", "phi"),
        ("NetworkPolicy", "phi"),
        ("Deployment", "phi"),
    ]
    deployment = objs[-1]
    # One node and no spare: an update replaces the pod in place.
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Workspace",
        "phi",
        "u-1",
        True,
    )
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"] == {
        "kaito.sh/workspace": "phi",
        "kaito.sh/workspacenamespace": "ml",
    }
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert terms["nodeSelectorTerms"] == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}
    ]


def test_the_vllm_command_carries_the_plan_and_kaito_s_flags() -> None:
    args = inference_manifests.command(inference())
    assert args == (
        "python3 /workspace/vllm/inference_api.py --model=microsoft/Phi-3-mini-4k-instruct "
        "--dtype=float16 --kaito-config-file=/mnt/config/inference_config.yaml "
        "--download-dir=/workspace/weights"
    )


def test_transformers_runs_through_accelerate_with_the_plan_s_arguments() -> None:
    tf = plan(
        runtime="transformers", runtime_args=["--torch_dtype=float16", "--pipeline=text-generation"]
    )
    args = inference_manifests.command(inference(plan=tf))
    assert args.startswith("accelerate launch --num_processes=1")
    assert args.endswith(
        "/workspace/tfs/inference_api.py --torch_dtype=float16 --pipeline=text-generation "
        "--cache_dir=/workspace/weights"
    )


def test_several_nodes_are_a_statefulset_led_by_pod_0() -> None:
    big = plan(
        instance_type="Standard_NC24ads_A100_v4",
        node_count=2,
        pipeline_parallel_size=2,
        runtime_args=["--model=meta-llama/Llama-3.3-70B-Instruct", "--pipeline-parallel-size=2"],
    )
    objs = inference_manifests.objects(
        inference(name="big", plan=big, preset=LLAMA, worker_nodes=["b", "a"]), SETTINGS
    )
    assert kinds(objs) == [
        ("ConfigMap", "big-inference-config"),
        ("Service", "big"),
        ("Service", "big-headless"),
        ("NetworkPolicy", "big"),
        ("StatefulSet", "big"),
    ]
    service, headless, sts = objs[1], objs[2], objs[4]
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        (80, 5000),
        (29500, 29500),
    ]
    assert service["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == "big-0"
    assert headless["spec"]["clusterIP"] == "None"
    assert (sts["spec"]["replicas"], sts["spec"]["serviceName"]) == (2, "big-headless")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    args = container["args"][0]
    assert args.startswith(
        'if [ "${POD_INDEX}" = "0" ]; then /workspace/vllm/multi-node-serving.sh'
    )
    assert "leader --ray_cluster_size=2 --ray_port=6379; python3 /workspace/vllm/" in args
    assert "--ray_address=big-0.big-headless.ml.svc.cluster.local" in args
    assert any(e["name"] == "POD_INDEX" for e in container["env"])
    affinity = sts["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert [t["matchFields"][0]["values"] for t in terms] == [["a"], ["b"]]


def test_adapters_are_pulled_or_mounted_and_passed_to_vllm_with_their_strength() -> None:
    adapters = [
        adapter("style", image="registry.example/style:1", imagePullSecrets=["pull"]),
        adapter("legal", volumeSource={"persistentVolumeClaim": {"claimName": "legal"}}),
    ]
    spec = inference_manifests.pod_spec(inference(adapters=adapters), SETTINGS)
    (init,) = spec["initContainers"]
    assert init["name"] == "puller-style"
    assert init["image"] == SETTINGS.adapter_puller_image
    assert "skopeo copy docker://registry.example/style:1" in init["command"][2]
    assert "/mnt/adapter/style/" in init["command"][2]
    assert {"name": "adapter-legal", "persistentVolumeClaim": {"claimName": "legal"}} in spec[
        "volumes"
    ]
    container = spec["containers"][0]
    assert {"name": "adapter-legal", "mountPath": "/mnt/adapter/legal"} in container["volumeMounts"]
    assert {"name": "style", "value": "0.5"} in container["env"]
    assert spec["imagePullSecrets"] == [{"name": "pull"}]
    assert (
        "--enable-lora --lora-modules style=/mnt/adapter/style legal=/mnt/adapter/legal"
        in container["args"][0]
    )


def test_a_user_config_map_is_mounted_instead_of_the_default() -> None:
    objs = inference_manifests.objects(inference(config="my-config"), SETTINGS)
    assert "ConfigMap" not in [k for k, _ in kinds(objs)]
    volumes = objs[-1]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config-volume", "configMap": {"name": "my-config"}} in volumes


def test_a_user_template_runs_as_is_on_the_workspace_s_nodes() -> None:
    template = {
        "metadata": {"labels": {"app": "custom"}},
        "spec": {"containers": [{"name": "mine", "image": "example/server:1"}]},
    }
    deployment = inference_manifests.workload(inference(template=template, preset=None), SETTINGS)
    pod = deployment["spec"]["template"]
    assert pod["spec"]["containers"] == [{"name": "mine", "image": "example/server:1"}]
    assert pod["metadata"]["labels"]["app"] == "custom"
    assert pod["metadata"]["labels"]["kaito.sh/workspace"] == "phi"
    assert {t["key"] for t in pod["spec"]["tolerations"]} == {"sku", "nvidia.com/gpu"}
    assert "affinity" in pod["spec"]


def test_the_startup_allowance_grows_with_the_weights() -> None:
    small = inference_manifests.startup_seconds(inference(), SETTINGS)
    large = inference_manifests.startup_seconds(inference(preset=LLAMA), SETTINGS)
    assert PHI is not None
    assert LLAMA is not None
    assert small == 600 + round(PHI.weights_gib * 10 + 0.5)
    assert large > small
    probe = inference_manifests.pod_spec(inference(preset=LLAMA), SETTINGS)["containers"][0][
        "startupProbe"
    ]
    assert probe["failureThreshold"] * probe["periodSeconds"] >= large


# ---------------------------------------------------------------------- InferenceReady


def deployment(
    ready: int, *, replicas: int = 1, updated: int | None = None, total: int | None = None
) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "phi", "generation": 2},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 2,
            "replicas": replicas if total is None else total,
            "readyReplicas": ready,
            "updatedReplicas": ready if updated is None else updated,
        },
    }


def pod(name: str = "phi-1", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"name": "phi", "state": {"waiting": {"reason": reason, "message": message}}}


def test_ready_replicas_at_the_current_revision_make_inference_ready() -> None:
    result = inference_verdict(deployment(1), [pod()])
    assert (result.ready, result.reason) == (True, "WorkspaceInferenceStatusSuccess")


def test_a_workload_not_yet_ready_without_a_pod_problem_is_pending() -> None:
    result = inference_verdict(deployment(0), [pod(phase="Pending")])
    assert (result.ready, result.reason, result.message) == (
        False,
        "WorkspaceInferenceStatusPending",
        "Deployment 0 of 1 replicas ready",
    )
    assert inference_verdict(None, []).reason == "WorkspaceInferenceStatusPending"


def test_pod_problems_become_kaito_s_reasons_with_the_real_message() -> None:
    cases = [
        (
            pod(containerStatuses=[waiting("ImagePullBackOff", "Back-off pulling image x")]),
            "ImagePullError",
            "Back-off pulling image x",
        ),
        (
            pod(initContainerStatuses=[waiting("ErrImagePull", "no such host")]),
            "ImagePullError",
            "no such host",
        ),
        (
            pod(containerStatuses=[waiting("CrashLoopBackOff", "back-off 5m0s")]),
            "ContainerCrashLoopBackOff",
            "back-off 5m0s",
        ),
        (
            pod(
                containerStatuses=[
                    {
                        "name": "phi",
                        "state": {"running": {}},
                        "lastState": {"terminated": {"reason": "OOMKilled"}},
                    }
                ]
            ),
            "ContainerOOMKilled",
            "killed for exceeding its memory",
        ),
        (
            pod(
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    }
                ]
            ),
            "Unschedulable",
            "Insufficient nvidia.com/gpu",
        ),
        (
            pod(reason="Evicted", message="The node was low on resource: memory."),
            "PodEvicted",
            "low on resource",
        ),
        (  # killed again and again: kubectl shows CrashLoopBackOff, the cause is the memory
            {
                "metadata": {"name": "phi-1"},
                "spec": {
                    "containers": [{"name": "phi", "resources": {"limits": {"memory": "8Gi"}}}]
                },
                "status": {
                    "containerStatuses": [
                        {
                            **waiting("CrashLoopBackOff", "back-off 40s"),
                            "restartCount": 4,
                            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
                        }
                    ]
                },
            },
            "ContainerOOMKilled",
            "memory limit (8Gi), restarted 4 times",
        ),
    ]
    for broken, reason, text in cases:
        result = inference_verdict(deployment(0), [broken])
        assert (result.ready, result.reason) == (False, reason)
        assert text in result.message
        assert result.message.startswith("pod phi-1")


def test_a_stuck_rollout_reports_the_new_pod_s_problem() -> None:
    old = pod("phi-old", phase="Running")
    new = pod("phi-new", containerStatuses=[waiting("ErrImagePull", "not found")])
    # The surge pod counts as updated at once, while the old replica still serves.
    result = inference_verdict(deployment(1, updated=1, total=2), [old, new])
    assert (result.ready, result.reason) == (False, "ImagePullError")
    assert inference_verdict(deployment(1), [old, new]).ready  # finished rollouts are ready


def test_triton_serves_the_plan_through_a_generated_model_repository() -> None:
    triton = plan(
        runtime="triton",
        runtime_args=[
            "--model=microsoft/Phi-3-mini-4k-instruct",
            "--served-model-name=phi-3-mini-4k-instruct",
            "--dtype=float16",
            "--gpu-memory-utilization=0.9",
            "--tensor-parallel-size=1",
            "--max-model-len=4096",
            "--chat-template=/workspace/chat_templates/x.jinja",
        ],
    )
    objs = inference_manifests.objects(inference(plan=triton), SETTINGS)
    assert kinds(objs) == [
        ("ConfigMap", "phi-inference-config"),
        ("ConfigMap", "phi-model-repository"),
        ("Service", "phi"),
        ("NetworkPolicy", "phi"),
        ("Deployment", "phi"),
    ]
    repository = objs[1]["data"]
    assert 'backend: "vllm"' in repository["config.pbtxt"]
    assert 'name: "phi-3-mini-4k-instruct"' in repository["config.pbtxt"]
    assert json.loads(repository["model.json"]) == {
        "model": "microsoft/Phi-3-mini-4k-instruct",
        "served_model_name": "phi-3-mini-4k-instruct",
        "dtype": "float16",
        "gpu_memory_utilization": 0.9,
        "tensor_parallel_size": 1,
        "max_model_len": 4096,
        "download_dir": "/workspace/weights",
    }
    spec = objs[-1]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["image"] == SETTINGS.triton_image
    assert container["args"][0].startswith("tritonserver --model-repository=/mnt/models")
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    volume = next(v for v in spec["volumes"] if v["name"] == "model-repository")
    assert [i["path"] for i in volume["configMap"]["items"]] == [
        "phi-3-mini-4k-instruct/config.pbtxt",
        "phi-3-mini-4k-instruct/1/model.json",
    ]


def test_kairyu_runtime_images_replace_the_presets_when_configured() -> None:
    ours = SETTINGS.model_copy(
        update={"vllm_image": "kairyu/vllm:1", "transformers_image": "kairyu/runtime:1"}
    )
    tf = plan(runtime="transformers", runtime_args=[])
    assert inference_manifests.runtime_image(inference(), SETTINGS) == inference().image
    assert inference_manifests.runtime_image(inference(), ours) == "kairyu/vllm:1"
    assert inference_manifests.runtime_image(inference(plan=tf), ours) == "kairyu/runtime:1"


def emptydirs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [v["emptyDir"] for v in spec["volumes"] if "emptyDir" in v]


def test_generated_pods_meet_the_restricted_pod_security_level() -> None:
    spec = inference_manifests.pod_spec(inference(adapters=[adapter("a", image="r/a:1")]), SETTINGS)
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in spec["containers"] + spec["initContainers"]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert all("sizeLimit" in e for e in emptydirs(spec))
    assert PHI is not None
    weights = next(v for v in spec["volumes"] if v["name"] == "model-weights-volume")
    assert weights["emptyDir"]["sizeLimit"] == f"{math.ceil(PHI.weights_gib * 1.5) + 10}Gi"
    # A preset's image (KAITO's, root) keeps its user; kairyu's own image runs as its UID 1000.
    assert "runAsNonRoot" not in spec["securityContext"]
    ours = WorkloadSettings(transformers_image="ghcr.io/kairyu/runtime:1")
    tfs = inference_manifests.pod_spec(inference(plan=plan(runtime="transformers")), ours)
    assert tfs["securityContext"]["runAsNonRoot"] is True
    assert tfs["securityContext"]["runAsUser"] == 1000
    assert tfs["containers"][0]["securityContext"]["runAsNonRoot"] is True


def test_a_user_template_keeps_its_settings_and_gets_the_missing_pod_defaults() -> None:
    mine = {"runAsUser": 2000, "seccompProfile": {"type": "Localhost", "localhostProfile": "p"}}
    template = {
        "spec": {
            "securityContext": mine,
            "containers": [{"name": "mine", "image": "example/server:1"}],
        }
    }
    pod = inference_manifests.workload(inference(template=template, preset=None), SETTINGS)["spec"]
    assert pod["template"]["spec"]["securityContext"] == mine
    assert pod["template"]["spec"]["automountServiceAccountToken"] is False
    bare = {"spec": {"containers": [{"name": "mine", "image": "example/server:1"}]}}
    pod = inference_manifests.workload(inference(template=bare, preset=None), SETTINGS)["spec"]
    assert pod["template"]["spec"]["securityContext"] == {
        "seccompProfile": {"type": "RuntimeDefault"}
    }


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ({"spec": "containers: []"}, "inference.template.spec must be an object, not str"),
        ({"spec": [1, 2]}, "inference.template.spec must be an object, not list"),
        ({"spec": {}}, "inference.template.spec is empty"),
        ({"metadata": 5, "spec": {"containers": []}}, "inference.template.metadata must be"),
        ({"metadata": {"labels": {"a": 1}}, "spec": {"x": 1}}, "labels' values must be strings"),
        ({"spec": {"containers": [], "tolerations": 3}}, "tolerations must be a list"),
        ({"spec": {"containers": [], "securityContext": []}}, "securityContext must be an object"),
    ],
)
def test_a_malformed_template_is_refused_with_a_message(template: Any, message: str) -> None:
    with pytest.raises(WorkloadError, match=re.escape(message)):
        inference_manifests.workload(inference(template=template, preset=None), SETTINGS)


def test_the_network_policy_admits_the_namespace_and_the_listed_ones_to_the_serving_port() -> None:
    listed = inference_manifests.ingress_namespaces(" gateway, ml ,monitoring")
    assert listed == ["gateway", "ml", "monitoring"]
    big = inference(plan=plan(node_count=2), preset=LLAMA, ingress_from=listed)
    policy = next(
        o for o in inference_manifests.objects(big, SETTINGS) if o["kind"] == "NetworkPolicy"
    )
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    spec = policy["spec"]
    own = {"kaito.sh/workspace": "phi", "kaito.sh/workspacenamespace": "ml"}
    assert spec["podSelector"] == {"matchLabels": own}
    serving, internal = spec["ingress"]
    assert serving["ports"] == [{"protocol": "TCP", "port": 5000}]
    assert serving["from"] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]
    # Ray and torch.distributed (29500, 6379 and Ray's others): the Workspace's own pods only.
    assert internal == {"from": [{"podSelector": {"matchLabels": own}}]}
    every = inference_manifests.network_policy(inference(ingress_from=["*"]))
    assert every["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {}}]
    # kairyu's activator reads each pod's /metrics on the serving port, from its own namespace
    # only (a pod labelled like it elsewhere is not let in).
    scraped = inference_manifests.network_policy(inference(), "kairyu-system")
    assert scraped["spec"]["ingress"][0]["from"][-1] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kairyu-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kairyu-activator"}},
    }


def test_a_multirole_role_runs_as_its_role_and_lets_the_other_role_in() -> None:
    marks = {"multiroleinference.kaito.sh/created-by": "pd", "kaito.sh/inference-role": "decode"}
    decode = inference(pod_labels=marks)
    env = {
        e["name"]: e for e in inference_manifests.pod_spec(decode, SETTINGS)["containers"][0]["env"]
    }
    assert env["KAITO_INFERENCE_ROLE"]["value"] == "decode"
    assert env["VLLM_NIXL_SIDE_CHANNEL_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "status.podIP"
    )
    # NIXL's side channel and KV transfers come from the prefill pods, another Workspace's.
    rules = inference_manifests.network_policy(decode)["spec"]["ingress"]
    assert rules[-1] == {
        "from": [{"podSelector": {"matchLabels": {"multiroleinference.kaito.sh/created-by": "pd"}}}]
    }
    plain = inference()
    assert len(inference_manifests.network_policy(plain)["spec"]["ingress"]) == 2
    assert "KAITO_INFERENCE_ROLE" not in str(inference_manifests.pod_spec(plain, SETTINGS))


def test_an_ingress_annotation_with_a_bad_namespace_name_is_refused() -> None:
    with pytest.raises(WorkloadError, match="'Team_A' is not a namespace name"):
        inference_manifests.ingress_namespaces("ok,Team_A")


def test_an_api_key_secret_reaches_the_runtime_by_reference() -> None:
    spec = inference_manifests.pod_spec(inference(api_key_secret="phi-key"), SETTINGS)
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    ref = {"secretKeyRef": {"name": "phi-key", "key": "api-key"}}
    assert env["KAIRYU_RUNTIME_API_KEY"]["valueFrom"] == ref
    assert env["VLLM_API_KEY"]["valueFrom"] == ref
    plain = inference_manifests.pod_spec(inference(), SETTINGS)["containers"][0]["env"]
    assert "VLLM_API_KEY" not in {e["name"] for e in plain}


def test_pods_refused_at_creation_show_the_admission_message() -> None:
    refused = deployment(ready=0)
    message = (
        'pods "phi-5d8f-x" is forbidden: violates PodSecurity "restricted:latest": '
        "allowPrivilegeEscalation != false"
    )
    refused["status"]["conditions"] = [
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message}
    ]
    result = inference_verdict(refused, [])
    assert (result.ready, result.reason, result.message) == (False, "FailedCreate", message)


def test_ownership_is_the_controller_reference_s_uid_not_the_name() -> None:
    owner = inference().owner
    check_owned(inference_manifests.service(inference()), owner)
    foreign = {"kind": "Deployment", "metadata": {"name": "phi", "namespace": "ml"}}
    with pytest.raises(NameTakenError, match="Deployment ml/phi already exists and is not owned"):
        check_owned(foreign, owner)
    other = inference_manifests.service(inference(uid="u-2"))
    with pytest.raises(NameTakenError):
        check_owned(other, owner)


def test_replicas_of_a_single_node_model_are_one_deployment_with_a_pod_per_node() -> None:
    three = inference(plan=plan(node_count=3, replicas=3), worker_nodes=["a", "b", "c"])
    assert not three.multi_node
    workload = inference_manifests.objects(three, SETTINGS)[-1]
    assert (workload["kind"], workload["spec"]["replicas"]) == ("Deployment", 3)
    container = workload["spec"]["template"]["spec"]["containers"][0]
    # Each pod asks for all of its node's GPUs, so no two replicas share a node.
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    terms = json.dumps(workload["spec"]["template"]["spec"]["affinity"]["nodeAffinity"])
    assert all(f'"{node}"' in terms for node in ("a", "b", "c"))


def test_status_reports_replicas_by_replica_not_by_pod_and_a_selector_for_hpa() -> None:
    labels = {"kaito.sh/workspace": "phi", "kaito.sh/workspacenamespace": "ml"}
    deployment_status = {"status": {"replicas": 3, "readyReplicas": 2}}
    assert replicas_status(deployment_status, 1, labels) == {
        "replicas": 3,
        "readyReplicas": 2,
        "selector": "kaito.sh/workspace=phi,kaito.sh/workspacenamespace=ml",
    }
    # One replica over 2 nodes is 2 pods; ready only when both are.
    statefulset_status = {"status": {"replicas": 2, "readyReplicas": 1}}
    assert replicas_status(statefulset_status, 2, labels)["replicas"] == 1
    assert replicas_status(statefulset_status, 2, labels)["readyReplicas"] == 0
    assert replicas_status(None, 1, labels)["replicas"] == 0


def test_workspace_succeeded_follows_inference_ready_with_kaito_s_reasons() -> None:
    ready = succeeded(InferenceVerdict(True, "WorkspaceInferenceStatusSuccess", "deployed"))
    assert (ready.ready, ready.reason, ready.message) == (
        True,
        "workspaceSucceeded",
        "workspace succeeds",
    )
    waiting = succeeded(InferenceVerdict(False, "WorkspaceInferenceStatusPending", "0 of 1 ready"))
    assert (waiting.ready, waiting.reason) == (False, "workspacePending")
    failing = succeeded(InferenceVerdict(False, "ImagePullError", "manifest unknown"))
    assert (failing.ready, failing.reason) == (False, "ImagePullError")
    assert "manifest unknown" in failing.message


def test_runtime_status_names_the_engine_its_image_tag_and_the_quantization() -> None:
    settings = WorkloadSettings(vllm_image="registry.local/kairyu/vllm:0.11.2@sha256:ab")
    quantized = inference(plan=plan(quantization="awq"))
    assert inference_manifests.runtime_status(quantized, settings) == {
        "engine": "vllm",
        "version": "0.11.2",
        "quantization": "awq",
    }
    assert inference_manifests.runtime_status(inference(), SETTINGS) == {
        "engine": "vllm",
        "version": "0.5.0",
    }
    template = inference(template={"spec": {"containers": [{"name": "c", "image": "x"}]}})
    assert inference_manifests.runtime_status(template, SETTINGS) == {"engine": "template"}


def test_a_hugging_face_model_without_preset_sizes_its_volume_from_the_plan() -> None:
    hf = inference(preset=None, plan=plan(weights_gib=14.96))
    limit = inference_manifests.weights_limit(hf, SETTINGS)
    assert limit == f"{math.ceil(14.96 * 1.5) + SETTINGS.scratch_gib}Gi"


def test_scaling_down_keeps_the_pod_template_so_only_surplus_pods_go() -> None:
    three = inference(plan=plan(node_count=3, replicas=3), worker_nodes=["a", "b", "c"])
    current = inference_manifests.objects(three, SETTINGS)[-1]
    one = inference(plan=plan(node_count=1, replicas=1), worker_nodes=["a"])
    assert inference_manifests.kept_nodes(one, current) == ["a", "b", "c"]
    # The view keeps no pod template; the workload's annotation says where its pods are pinned.
    assert inference_manifests.kept_nodes(one, trim("Deployment", current)) == ["a", "b", "c"]
    scaled = inference_manifests.objects(replace(one, worker_nodes=["a", "b", "c"]), SETTINGS)[-1]
    assert scaled["spec"]["template"] == current["spec"]["template"]
    assert scaled["spec"]["replicas"] == 1
    # Growing, or moving to other nodes, pins the pods to the new plan's nodes.
    assert inference_manifests.kept_nodes(
        three, inference_manifests.objects(one, SETTINGS)[-1]
    ) == ["a", "b", "c"]
    moved = inference(worker_nodes=["z"])
    assert inference_manifests.kept_nodes(moved, current) == ["z"]


def test_several_replicas_roll_one_at_a_time_without_a_surge_node() -> None:
    # One replica: beside the old pod on the spare node the provisioner added for the update,
    # else in place (the old pod holds its node's GPUs).
    spare = inference(worker_nodes=["node-a", "node-b"], spare_node=True)
    assert inference_manifests.rolling_update(spare) == {"maxSurge": 1, "maxUnavailable": 0}
    assert inference_manifests.rolling_update(inference()) == {"maxSurge": 0, "maxUnavailable": 1}
    # Pinned to both nodes still after the spare replaced the old one: no spare any more.
    after = inference(worker_nodes=["node-a", "node-b"])
    assert inference_manifests.rolling_update(after) == {"maxSurge": 0, "maxUnavailable": 1}
    three = inference(plan=plan(node_count=3, replicas=3), worker_nodes=["a", "b", "c"])
    assert inference_manifests.rolling_update(three) == {"maxSurge": 0, "maxUnavailable": 1}
