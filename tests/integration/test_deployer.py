"""The deployer against the real cluster: from a Workspace to Running pods and InferenceReady.

Watcher, planner, provisioner (real Karpenter) and deployer run in this process. kwok plays the
kubelet: pods go Running on the GPU nodes Karpenter made, or fail as an injected stage says.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from rollout_stack import rollout_stack

from kairyu_core.bus import Bus
from kairyu_core.kube import KubeClient, errors, resources
from kairyu_localenv import LocalCluster
from kairyu_testing.seeds import seed
from kairyu_testing.stack import ServiceStack
from kairyu_testing.workspaces import condition, has_reason, is_true, until


@pytest.fixture
async def services(
    karpenter: object, bus: Bus, kube: KubeClient, namespace: str
) -> AsyncIterator[ServiceStack]:
    stack = await rollout_stack(bus, kube, namespace, tuner=False)
    yield stack
    await stack.stop()


def template_workspace(
    name: str, namespace: str, containers: list[dict[str, Any]]
) -> dict[str, Any]:
    """A Workspace that runs the user's own pod template on one NC6s_v3."""
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": namespace},
        "resource": {
            "instanceType": "Standard_NC6s_v3",
            "labelSelector": {"matchLabels": {"apps": "custom"}},
        },
        "inference": {"template": {"spec": {"containers": containers}}},
    }


def in_namespace(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    doc["metadata"]["namespace"] = namespace
    return doc


async def test_the_seed_runs_on_its_gpu_node_and_the_workspace_turns_ready(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    name = "workspace-phi-3-mini"
    await asyncio.to_thread(cluster.apply, in_namespace(seed("inference"), namespace))
    obj = await until(kube, namespace, name, is_true("WorkspaceReady"), what="WorkspaceReady")
    assert condition(obj, "InferenceReady")["reason"] == "WorkspaceInferenceStatusSuccess"
    workers = obj["status"]["workerNodes"]

    deployment = await kube.get(resources.DEPLOYMENTS, name, namespace=namespace)
    pod_spec = deployment["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    args = container["args"][0]
    assert args.startswith("python3 /workspace/vllm/inference_api.py ")
    for expected in obj["status"]["plan"]["runtimeArgs"]:
        assert expected in args  # the plan's model, dtype, parallelism and max-model-len
    assert "--dtype=float16" in args  # V100: no bfloat16
    assert "--kaito-config-file=/mnt/config/inference_config.yaml" in args
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {t["key"] for t in pod_spec["tolerations"]} == {"sku", "nvidia.com/gpu"}
    probe = container["startupProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/health", 5000)
    service = await kube.get(resources.SERVICES, name, namespace=namespace)
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(80, 5000)]
    config = await kube.get(resources.CONFIGMAPS, f"{name}-inference-config", namespace=namespace)
    assert "inference_config.yaml" in config["data"]

    pods = await kube.list(
        resources.PODS, namespace=namespace, label_selector=f"kaito.sh/workspace={name}"
    )
    assert [(p["status"]["phase"], p["spec"]["nodeName"]) for p in pods["items"]] == [
        ("Running", workers[0])
    ]
    shown = await asyncio.to_thread(
        cluster.kubectl, "get", "workspaces.v1alpha1.kaito.sh", name, "-n", namespace
    )
    header, row = (line.split() for line in shown.stdout.strip().splitlines())
    columns = dict(zip(header, row, strict=False))
    assert (columns["RESOURCEREADY"], columns["INFERENCEREADY"], columns["WORKSPACEREADY"]) == (
        "True",
        "True",
        "True",
    )

    # Deleting the Workspace takes its workload, service and config with it (the deployer stops
    # the workload while the provisioner's finalizer holds the Workspace), and its node.
    await asyncio.to_thread(cluster.kubectl, "delete", "workspace", name, "-n", namespace)
    deadline = time.monotonic() + 90  # Karpenter drains the node; slower on a loaded machine
    left: list[str] = []
    while time.monotonic() < deadline:
        left = []
        for resource in (resources.DEPLOYMENTS, resources.SERVICES, resources.CONFIGMAPS):
            listed = await kube.list(
                resource, namespace=namespace, label_selector=f"kaito.sh/workspace={name}"
            )
            left += [f"{resource.kind}/{i['metadata']['name']}" for i in listed["items"]]
        nodes = await kube.list(  # this namespace's: another test's Workspace may share the name
            resources.NODES,
            label_selector=f"kaito.sh/workspace={name},kaito.sh/workspacenamespace={namespace}",
        )
        left += [f"Node/{i['metadata']['name']}" for i in nodes["items"]]
        if not left:
            break
        await asyncio.sleep(0.5)
    assert left == []


async def test_the_adapter_seed_gets_an_init_container_and_lora_arguments(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    name = "workspace-phi-3-mini-adapter"
    await asyncio.to_thread(cluster.apply, in_namespace(seed("adapter"), namespace))
    await until(kube, namespace, name, is_true("InferenceReady"), what="InferenceReady")
    deployment = await kube.get(resources.DEPLOYMENTS, name, namespace=namespace)
    pod_spec = deployment["spec"]["template"]["spec"]
    (init,) = pod_spec["initContainers"]
    assert init["name"] == "puller-phi-3-adapter"
    assert "docker://ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1" in init["command"][2]
    assert {"name": "adapter-volume", "mountPath": "/mnt/adapter"} in init["volumeMounts"]
    (container,) = pod_spec["containers"]
    assert (
        "--enable-lora --lora-modules phi-3-adapter=/mnt/adapter/phi-3-adapter"
        in container["args"][0]
    )
    assert {"name": "phi-3-adapter", "value": "1.0"} in container["env"]  # its strength


async def test_an_image_pull_failure_is_the_inference_reason_within_seconds(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    doc = in_namespace(seed("inference"), namespace)
    doc["metadata"]["name"] = "broken"
    # A private model image under a registry that never resolves: kwok's injected stage makes
    # its pull fail as a kubelet's would.
    doc["inference"]["preset"]["accessMode"] = "private"
    doc["inference"]["preset"]["presetOptions"] = {"image": "unreachable.invalid/phi-3:0.0.1"}
    await asyncio.to_thread(cluster.apply, doc)
    await until(kube, namespace, "broken", is_true("ResourceReady"), what="nodes")
    started = time.monotonic()
    obj = await until(
        kube,
        namespace,
        "broken",
        has_reason("InferenceReady", "ImagePullError"),
        what="ImagePullError",
    )
    assert time.monotonic() - started < 10
    inference = condition(obj, "InferenceReady")
    assert inference["status"] == "False"
    assert "container broken" in inference["message"]
    assert "unreachable.invalid: no such host" in inference["message"]
    assert condition(obj, "WorkspaceReady")["status"] == "False"


async def test_a_spec_change_keeps_the_serving_replica_until_its_successor_serves(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    name = "workspace-phi-3-mini"
    doc = in_namespace(seed("inference"), namespace)
    await asyncio.to_thread(cluster.apply, doc)
    ready = await until(kube, namespace, name, is_true("InferenceReady"), what="InferenceReady")
    (old_node,) = ready["status"]["workerNodes"]
    selector = f"kaito.sh/workspace={name}"
    (serving,) = (await kube.list(resources.PODS, namespace=namespace, label_selector=selector))[
        "items"
    ]
    doc["inference"]["config"] = "tuned-config"  # a new pod template, the same SKU
    await asyncio.to_thread(cluster.apply, doc)
    # The node's only GPU is held by the serving pod: the new one starts on a spare node, and
    # the old one serves until then.
    spare = await until(
        kube,
        namespace,
        name,
        lambda obj: len((obj.get("status") or {}).get("workerNodes") or []) == 2,
        what="a spare node reported",
        timeout=60,
    )
    assert "a spare node for the update" in condition(spare, "ResourceReady")["message"]
    assert spare["status"]["surgeReplaces"] == old_node
    generation = spare["metadata"]["generation"]
    obj = spare

    def done(obj: dict[str, Any]) -> bool:
        served = condition(obj, "InferenceReady")
        nodes = (obj.get("status") or {}).get("workerNodes") or []
        return served.get("observedGeneration") == generation and nodes not in ([], [old_node])

    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, f"the update did not end on one node: {obj['status']}"
        pods = (await kube.list(resources.PODS, namespace=namespace, label_selector=selector))[
            "items"
        ]
        assert any(
            p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
            for p in pods
        ), "no pod serves during the update"
        obj = await kube.get(resources.WORKSPACES, name, namespace=namespace)
        if done(obj) and len(obj["status"]["workerNodes"]) == 1:
            break
        await asyncio.sleep(0.2)
    (new_node,) = obj["status"]["workerNodes"]
    assert new_node != old_node
    assert "surgeReplaces" not in obj["status"]
    pods = (await kube.list(resources.PODS, namespace=namespace, label_selector=selector))["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert [p["spec"]["nodeName"] for p in live] == [new_node]
    assert serving["metadata"]["name"] not in {p["metadata"]["name"] for p in live}


async def test_a_crashing_custom_model_reports_its_crash_loop(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    # A server that exits at once: kwok's crash-loop stage plays its kubelet.
    containers = [{"name": "server", "image": "example/server:1", "command": ["false"]}]
    doc = template_workspace("custom", namespace, containers)
    await asyncio.to_thread(cluster.apply, doc)
    obj = await until(
        kube,
        namespace,
        "custom",
        has_reason("InferenceReady", "ContainerCrashLoopBackOff"),
        what="the crash loop",
    )
    message = condition(obj, "InferenceReady")["message"]
    assert "container server: back-off 40s restarting failed container=server" in message
    deployment = await kube.get(resources.DEPLOYMENTS, "custom", namespace=namespace)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["false"]  # the user's template, run as is
    assert {t["key"] for t in pod["tolerations"]} == {"sku", "nvidia.com/gpu"}


async def test_a_model_killed_for_memory_reports_oomkilled_not_just_its_crash_loop(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    # kwok's OOM stage plays the kernel for a container limited to 1 MiB.
    limits = {"memory": "1Mi", "nvidia.com/gpu": "1"}
    containers = [{"name": "server", "image": "example/server:1", "resources": {"limits": limits}}]
    doc = template_workspace("small", namespace, containers)
    await asyncio.to_thread(cluster.apply, doc)
    obj = await until(
        kube,
        namespace,
        "small",
        has_reason("InferenceReady", "ContainerOOMKilled"),
        what="the OOM kill",
    )
    message = condition(obj, "InferenceReady")["message"]
    assert "container server: killed for exceeding its memory limit (1Mi)" in message
    # `kubectl get workspace` shows the cause too, once the watcher has summarised it.
    summary = await until(
        kube, namespace, "small", has_reason("WorkspaceReady", "ContainerOOMKilled"), what="summary"
    )
    assert condition(summary, "WorkspaceReady")["status"] == "False"


async def test_a_multi_node_plan_runs_as_a_statefulset_across_its_nodes(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    doc = in_namespace(seed("inference"), namespace)
    doc["metadata"]["name"] = "big"
    doc["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
    doc["inference"]["preset"] = {
        "name": "llama-3.3-70b-instruct",
        "presetOptions": {"modelAccessSecret": "hf-token"},
    }
    await asyncio.to_thread(cluster.apply, doc)
    obj = await until(kube, namespace, "big", is_true("WorkspaceReady"), what="WorkspaceReady")
    workers = obj["status"]["workerNodes"]
    assert len(workers) == 2
    sts = await kube.get(resources.STATEFULSETS, "big", namespace=namespace)
    assert (sts["spec"]["replicas"], sts["spec"]["serviceName"]) == (2, "big-headless")
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "--pipeline-parallel-size=2" in args
    assert "--ray_address=big-0.big-headless." in args
    pods = await kube.list(
        resources.PODS, namespace=namespace, label_selector="kaito.sh/workspace=big"
    )
    assert sorted(p["spec"]["nodeName"] for p in pods["items"]) == sorted(workers)
    headless = await kube.get(resources.SERVICES, "big-headless", namespace=namespace)
    assert headless["spec"]["clusterIP"] == "None"


async def test_a_template_the_apiserver_refuses_is_explained_not_retried(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    doc = template_workspace("noimage", namespace, [{"name": "server"}])
    await asyncio.to_thread(cluster.apply, doc)
    obj = await until(
        kube, namespace, "noimage", has_reason("InferenceReady", "WorkloadInvalid"), what="refusal"
    )
    assert (
        "spec.template.spec.containers[0].image: Required value"
        in (condition(obj, "InferenceReady")["message"])
    )


async def test_a_name_held_by_someone_else_s_objects_is_reported_and_they_are_left_alone(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    # A user's own Service and StatefulSet happen to carry the Workspace's name.
    labels = {"app": "theirs"}
    theirs_service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "custom", "namespace": namespace},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    theirs_sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "custom", "namespace": namespace},
        "spec": {
            "replicas": 0,
            "serviceName": "custom",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "db", "image": "example/db:1"}]},
            },
        },
    }
    for doc in (theirs_service, theirs_sts):
        await asyncio.to_thread(cluster.apply, doc)
    containers = [{"name": "server", "image": "example/server:1"}]
    await asyncio.to_thread(cluster.apply, template_workspace("custom", namespace, containers))
    obj = await until(
        kube, namespace, "custom", has_reason("InferenceReady", "WorkloadInvalid"), what="refusal"
    )
    assert (
        f"Service {namespace}/custom already exists and is not owned by Workspace custom"
        in condition(obj, "InferenceReady")["message"]
    )
    service = await kube.get(resources.SERVICES, "custom", namespace=namespace)
    assert "ownerReferences" not in service["metadata"]  # not taken over (nor later collected)
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(80, 8080)]
    sts = await kube.get(resources.STATEFULSETS, "custom", namespace=namespace)
    assert "ownerReferences" not in sts["metadata"]
    assert "deletionTimestamp" not in sts["metadata"]


async def test_pods_refused_by_pod_security_admission_show_the_admission_message(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    await asyncio.to_thread(
        cluster.kubectl,
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
    )
    # A template that leaves runAsNonRoot and the capabilities unset: `restricted` refuses it.
    containers = [{"name": "server", "image": "example/server:1"}]
    await asyncio.to_thread(cluster.apply, template_workspace("loose", namespace, containers))
    obj = await until(
        kube, namespace, "loose", has_reason("InferenceReady", "FailedCreate"), what="refusal"
    )
    message = condition(obj, "InferenceReady")["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert "runAsNonRoot != true" in message
    assert condition(obj, "InferenceReady")["status"] == "False"


async def test_an_owned_service_replaced_by_someone_else_s_is_not_taken_over(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    containers = [{"name": "server", "image": "example/server:1"}]
    doc = template_workspace("swap", namespace, containers)
    await asyncio.to_thread(cluster.apply, doc)
    await until(kube, namespace, "swap", is_true("InferenceReady"), what="InferenceReady")
    # The deployer has applied (and remembered) its Service; a user replaces it with their own
    # (created, not applied: a status change may make the deployer re-apply in between).
    theirs = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "swap", "namespace": namespace},
        "spec": {
            "selector": {"app": "theirs"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }
    for _ in range(20):
        with contextlib.suppress(errors.NotFoundError):
            await kube.delete(resources.SERVICES, "swap", namespace=namespace)
        try:
            await kube.request("POST", resources.SERVICES.path(namespace=namespace), body=theirs)
            break
        except errors.ConflictError:  # the deployer re-applied first
            await asyncio.sleep(0.2)
    doc["metadata"]["annotations"] = {"kairyu.io/allow-ingress-from": "gateway"}  # re-apply
    await asyncio.to_thread(cluster.apply, doc)
    obj = await until(
        kube, namespace, "swap", has_reason("InferenceReady", "WorkloadInvalid"), what="refusal"
    )
    assert "Service" in condition(obj, "InferenceReady")["message"]
    service = await kube.get(resources.SERVICES, "swap", namespace=namespace)
    assert "ownerReferences" not in service["metadata"]
    assert service["spec"]["selector"] == {"app": "theirs"}
