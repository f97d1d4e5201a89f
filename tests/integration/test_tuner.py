"""The tuner against the real cluster: the seed tuning Workspace to a finished Job.

Watcher, planner, provisioner (real Karpenter) and tuner run in this process. kwok plays the
kubelet: the Job's pod runs on the GPU node Karpenter made and completes a moment later, or its
data download fails when the input URL's host is `unreachable.invalid` (a kwok stage).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from rollout_stack import rollout_stack

from kairyu_core.bus import Bus
from kairyu_core.kube import KubeClient, errors, resources
from kairyu_localenv import LocalCluster
from kairyu_testing.seeds import seed
from kairyu_testing.stack import ServiceStack
from kairyu_testing.workspaces import condition, has_reason, in_state, is_true, until

NAME = "workspace-phi-3-mini"


@pytest.fixture
async def services(
    karpenter: object, bus: Bus, kube: KubeClient, namespace: str
) -> AsyncIterator[ServiceStack]:
    stack = await rollout_stack(
        bus, kube, namespace, deployer=False, tuning_image="kairyu/tuning:test"
    )
    yield stack
    await stack.stop()


def seed_in(namespace: str) -> dict[str, Any]:
    doc = seed("tuning")
    doc["metadata"]["namespace"] = namespace
    return doc


async def test_the_seed_tuning_job_runs_on_its_gpu_node_and_succeeds(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    doc = seed_in(namespace)
    await asyncio.to_thread(cluster.apply, doc)
    started = await until(kube, namespace, NAME, is_true("JobStarted"), what="JobStarted")
    assert condition(started, "JobStarted")["reason"] == "WorkspaceTuningJobStatusStarted"
    workers = started["status"]["workerNodes"]

    job = await kube.get(resources.JOBS, NAME, namespace=namespace)
    assert job["metadata"]["ownerReferences"][0]["uid"] == started["metadata"]["uid"]
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    (downloader,) = spec["initContainers"]
    assert downloader["name"] == "data-downloader"
    assert downloader["command"][:3] == ["python3", "-m", "kairyu_tuning.download"]
    assert downloader["command"][-1] == doc["tuning"]["input"]["urls"][0]
    (tuning,) = spec["containers"]
    script = tuning["command"][2]
    assert script.startswith("accelerate launch --num_processes=1 -m kairyu_tuning.train ")
    assert "--model=microsoft/Phi-3-mini-4k-instruct" in script
    assert "--method=qlora" in script
    assert " && python3 -m kairyu_tuning.push --image=" in script
    assert doc["tuning"]["output"]["image"] in script
    assert "--docker-config=/mnt/push-secret/.dockerconfigjson" in script
    assert tuning["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    mounts = {m["name"]: m["mountPath"] for m in tuning["volumeMounts"]}
    assert mounts["data-volume"] == "/mnt/data"
    assert mounts["results-volume"] == "/mnt/results"
    assert mounts["config-volume"] == "/mnt/config"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["push-secret"]["secret"]["secretName"] == "ACR_REGISTRY_SECRET_HERE"
    config = await kube.get(
        resources.CONFIGMAPS, volumes["config-volume"]["configMap"]["name"], namespace=namespace
    )
    assert "load_in_4bit: true" in config["data"]["training_config.yaml"]  # KAITO's QLoRA default
    sku_taint = {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
    assert sku_taint in spec["tolerations"]

    pods = await kube.list(
        resources.PODS, namespace=namespace, label_selector=f"kaito.sh/workspace={NAME}"
    )
    assert [p["spec"]["nodeName"] for p in pods["items"]] == workers

    succeeded = await until(kube, namespace, NAME, is_true("WorkspaceSucceeded"), what="succeeded")
    assert condition(succeeded, "WorkspaceSucceeded")["reason"] == "workspaceSucceeded"
    # The watcher summarises the tuner's condition a moment later, as `kubectl get` shows it.
    done = await until(kube, namespace, NAME, in_state("Succeeded"), what="state Succeeded")
    assert condition(done, "WorkspaceReady")["status"] == "True"


async def test_a_failed_download_fails_the_workspace_with_the_reason(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    doc = seed_in(namespace)
    doc["tuning"]["input"]["urls"] = ["https://unreachable.invalid/train.parquet"]
    await asyncio.to_thread(cluster.apply, doc)
    failed = await until(
        kube, namespace, NAME, has_reason("WorkspaceSucceeded", "workspaceFailed"), what="failed"
    )
    message = condition(failed, "WorkspaceSucceeded")["message"]
    assert "InitContainerFailed" in message
    assert "data-downloader" in message
    assert "cannot resolve unreachable.invalid" in message
    assert condition(failed, "JobStarted")["reason"] == "WorkspaceTuningJobStatusFailed"
    await until(
        kube,
        namespace,
        NAME,
        in_state("Failed"),
        what="state Failed",
    )


async def test_an_invalid_tuning_config_is_explained_before_any_job_runs(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    await asyncio.to_thread(
        cluster.apply,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "my-tuning", "namespace": namespace},
            "data": {
                "training_config.yaml": "training_config:\n  LoraConfig:\n    r: 0\n"
                "  QuantizationConfig:\n    load_in_4bit: true\n"
            },
        },
    )
    doc = seed_in(namespace)
    doc["tuning"]["config"] = "my-tuning"
    await asyncio.to_thread(cluster.apply, doc)
    bad = await until(
        kube, namespace, NAME, has_reason("JobStarted", "InvalidTuningConfig"), what="explained"
    )
    assert "LoraConfig.r" in condition(bad, "JobStarted")["message"]
    with pytest.raises(errors.NotFoundError):
        await kube.get(resources.JOBS, NAME, namespace=namespace)


async def test_someone_else_s_job_of_that_name_is_reported_and_left_alone(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    theirs = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "etl", "image": "example/etl:1"}],
                }
            },
        },
    }
    await asyncio.to_thread(cluster.apply, theirs)
    await asyncio.to_thread(cluster.apply, seed_in(namespace))
    bad = await until(
        kube, namespace, NAME, has_reason("JobStarted", "WorkloadInvalid"), what="refusal"
    )
    assert (
        f"Job {namespace}/{NAME} already exists and is not owned by Workspace {NAME}"
        in condition(bad, "JobStarted")["message"]
    )
    job = await kube.get(resources.JOBS, NAME, namespace=namespace)
    assert "deletionTimestamp" not in job["metadata"]
    assert "ownerReferences" not in job["metadata"]
    assert job["spec"]["template"]["spec"]["containers"][0]["name"] == "etl"


async def test_a_job_the_apiserver_refuses_fails_the_workspace_with_its_message(
    cluster: LocalCluster, namespace: str, kube: KubeClient, services: ServiceStack
) -> None:
    doc = seed_in(namespace)
    # Admitted as a Workspace, refused as a Job (422): a claim without its name.
    doc["tuning"]["output"] = {"volumeSource": {"persistentVolumeClaim": {}}}
    await asyncio.to_thread(cluster.apply, doc)
    bad = await until(
        kube, namespace, NAME, has_reason("JobStarted", "WorkloadInvalid"), what="refusal"
    )
    message = condition(bad, "JobStarted")["message"]
    assert "persistentVolumeClaim.claimName: Required value" in message
    assert condition(bad, "WorkspaceSucceeded")["reason"] == "workspaceFailed"
