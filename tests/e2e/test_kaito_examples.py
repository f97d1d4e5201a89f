"""KAITO v0.12's example manifests, as its users apply them, through all five services.

KAITO's repository ships examples under `examples/inference` and `examples/fine-tuning`. Each
case below is one of them, built here field for field with the same API versions, names,
models, instance types, labels, annotations and options (comments and placeholders aside), and
applied unchanged. Each must end as KAITO's would: Ready (Workspace) or InferenceSetReady (set),
Succeeded (tuning), or refused or explained with the reason, where the example cannot run (a
node type no cloud in kairyu's catalog sells, an Arc node that is not there, a model the local
Hub endpoint does not serve).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from kairyu_core.kube import KubeClient, resources
from kairyu_localenv import LocalCluster
from kairyu_localenv.cluster import KubectlError
from kairyu_testing.stack import ServiceStack

pytestmark = pytest.mark.e2e

JSON = dict[str, Any]
A100 = "Standard_NC24ads_A100_v4"


def workspace(
    version: str,
    name: str,
    labels: dict[str, str],
    *,
    preset: str | None = None,
    sku: str | None = None,
    annotations: dict[str, str] | None = None,
    options: JSON | None = None,
    resource: JSON | None = None,
    inference: JSON | None = None,
    tuning: JSON | None = None,
) -> JSON:
    doc: JSON = {
        "apiVersion": f"kaito.sh/{version}",
        "kind": "Workspace",
        "metadata": {"name": name},
        "resource": {"labelSelector": {"matchLabels": labels}, **(resource or {})},
    }
    if annotations:
        doc["metadata"]["annotations"] = annotations
    if sku:
        doc["resource"]["instanceType"] = sku
    if tuning is not None:
        doc["tuning"] = tuning
    else:
        doc["inference"] = inference or {"preset": {"name": preset}}
        if options:
            doc["inference"]["preset"]["presetOptions"] = options
    return doc


def inference_set(
    version: str, name: str, spec: JSON, annotations: dict[str, str] | None = None
) -> JSON:
    doc: JSON = {
        "apiVersion": f"kaito.sh/{version}",
        "kind": "InferenceSet",
        "metadata": {"name": name},
        "spec": spec,
    }
    if annotations:
        doc["metadata"]["annotations"] = annotations
    return doc


SCALER = {
    "scaledobject.kaito.sh/auto-provision": "true",
    "scaledobject.kaito.sh/metricName": "vllm:num_requests_waiting",
    "scaledobject.kaito.sh/threshold": "10",
}
TUNING_INPUT = {
    "urls": [
        "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/"
        "train-00000-of-00001-54e3756291ca09c6.parquet?download=true"
    ]
}
TUNING_OUTPUT = {
    "image": "ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1",
    "imagePushSecret": "ACR_REGISTRY_SECRET_HERE",
}


@dataclass(frozen=True)
class Example:
    """One of KAITO's example files: its documents and how each named object must end."""

    file: str
    docs: list[JSON]
    expect: dict[str, str] = field(default_factory=dict)
    """object name → `ready`, `succeeded`, `set-ready`, `planned-false:<reason>`, or
    `refused:<text in the error>` (the apiserver or the webhook refuses the apply)."""


EXAMPLES = [
    Example(
        "inference/kaito_inferenceset_llama-3.1_8b_instruct.yaml",
        [
            inference_set(
                "v1alpha1",
                "llama-3-1-8b",
                {
                    "replicas": 2,
                    "nodeCountLimit": 10,
                    "labelSelector": {"matchLabels": {"apps": "large-model"}},
                    "updateStrategy": {"type": "RollingUpdate"},
                    "template": {
                        "resource": {"instanceType": A100},
                        "inference": {
                            "preset": {
                                "name": "llama-3.1-8b-instruct",
                                "presetOptions": {"modelAccessSecret": "hf-token"},
                            }
                        },
                    },
                },
            )
        ],
        {"llama-3-1-8b": "set-ready"},
    ),
    Example(
        "inference/kaito_inferenceset_mig_mixed_strategy.yaml",
        [
            inference_set(
                "v1beta1",
                "phi-4-mini",
                {
                    "replicas": 2,
                    "labelSelector": {"matchLabels": {"kaito-inferenceset": "phi-4-mini"}},
                    "template": {
                        "inference": {
                            "preset": {"accessMode": "public", "name": "phi-4-mini-instruct"}
                        },
                        "resource": {"mig": {"profile": "2g.24gb"}},
                    },
                },
                SCALER,
            )
        ],
        {"phi-4-mini": "set-ready"},
    ),
    Example(
        "inference/kaito_inferenceset_mistral_7b-instruct.yaml",
        [
            inference_set(
                "v1alpha1",
                "mistral-7b-instruct",
                {
                    "replicas": 1,
                    "nodeCountLimit": 5,
                    "labelSelector": {"matchLabels": {"apps": "mistral-7b-instruct"}},
                    "template": {
                        "resource": {"instanceType": A100},
                        "inference": {"preset": {"name": "mistralai/Mistral-7B-Instruct-v0.3"}},
                    },
                },
                SCALER,
            )
        ],
        {"mistral-7b-instruct": "set-ready"},
    ),
    Example(
        "inference/kaito_multiroleinference_phi4_4.yaml",
        [
            {
                "apiVersion": "kaito.sh/v1alpha1",
                "kind": "MultiRoleInference",
                "metadata": {"name": "phi-4"},
                "spec": {
                    "labelSelector": {"matchLabels": {"apps": "phi-4"}},
                    "model": {"name": "phi-4-mini-instruct"},
                    "roles": [
                        {"type": "prefill", "replicas": 1, "instanceType": A100},
                        {"type": "decode", "replicas": 1, "instanceType": A100},
                    ],
                },
            }
        ],
        {"phi-4": "multirole-ready"},
    ),
    Example(
        "inference/kaito_multiroleinference_deepseek-v3.yaml",
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "hf-token-v3"},
                "type": "Opaque",
                "data": {"HF_TOKEN": "<base64-encoded-huggingface-token>"},
            },
            {
                "apiVersion": "kaito.sh/v1alpha1",
                "kind": "MultiRoleInference",
                "metadata": {"name": "deepseek-v3-pd"},
                "spec": {
                    "labelSelector": {"matchLabels": {"apps": "deepseek-v3-pd"}},
                    "model": {"name": "deepseek-ai/DeepSeek-V3", "modelAccessSecret": "hf-token"},
                    "roles": [
                        {"type": "prefill", "replicas": 1, "instanceType": A100},
                        {"type": "decode", "replicas": 1, "instanceType": A100},
                    ],
                },
            },
        ],
        # The Secret (renamed here: the llama example's has its name) is refused as there. The
        # local Hub does not serve DeepSeek-V3, so each role's Workspace says it cannot be sized
        # (with the real Hub: 671B parameters need more nodes than the planner allows), and the
        # MultiRoleInference says its roles are not ready.
        {"hf-token-v3": "refused:illegal base64", "deepseek-v3-pd": "multirole-not-ready"},
    ),
    Example(
        "inference/kaito_workspace_accelerator.yaml",
        [
            workspace(
                "v1beta1",
                "workspace-accelerator-llama-3-1-8b-instruct",
                {"apps": "accelerator-llama-3-1-8b-instruct"},
                preset="llama-3.1-8b-instruct",
                options={"modelAccessSecret": "hf-token"},
                resource={"partition": {"mode": "accelerator", "count": 2}},
            )
        ],
        # No instanceType: kairyu chooses the SKU (KAITO needs its own nodes here).
        {"workspace-accelerator-llama-3-1-8b-instruct": "ready"},
    ),
    Example(
        "inference/kaito_workspace_deepseek_v4_flash_node_image.yaml",
        [
            workspace(
                "v1beta1",
                "workspace-deepseek-v4-flash",
                {"kaito-workspace": "deepseek-v4-flash"},
                preset="deepseek-ai/DeepSeek-V4-Flash",
                annotations={"kaito.sh/use-local-weights": "true"},
                resource={"count": 1},
            )
        ],
        # Sized from the Hub, and the local endpoint does not serve this model.
        {"workspace-deepseek-v4-flash": "planned-false:ModelMetadataUnreadable"},
    ),
    Example(
        "inference/kaito_workspace_gemma_4_12b_instruct.yaml",
        [
            workspace(
                "v1beta1",
                "workspace-gemma-4-12b-instruct",
                {"apps": "gemma-4-12b-instruct"},
                preset="google/gemma-4-12B-it",
                sku="Standard_NC80adis_H100_v5",
                options={"modelAccessSecret": "hf-secret"},
            )
        ],
        {"workspace-gemma-4-12b-instruct": "ready"},
    ),
    Example(
        "inference/kaito_workspace_gpt_oss_120b.yaml",
        [
            workspace(
                "v1beta1",
                "workspace-gpt-oss-120b",
                {"apps": "gpt-oss-120b"},
                preset="gpt-oss-120b",
                sku=A100,
                annotations={"kaito.sh/runtime": "transformers"},
            )
        ],
        # 121.54 GiB of weights on one 80 GiB A100 with transformers, which cannot span nodes:
        # KAITO's message ("Multi-node distributed inference is not supported with Huggingface
        # Transformers runtime").
        {"workspace-gpt-oss-120b": "planned-false:MultiNodeNotSupported"},
    ),
    Example(
        "inference/kaito_workspace_gpt_oss_20b.yaml",
        [
            workspace(
                "v1beta1",
                "workspace-gpt-oss-20b",
                {"apps": "gpt-oss-20b"},
                preset="gpt-oss-20b",
                sku=A100,
                annotations={"kaito.sh/runtime": "transformers"},
            )
        ],
        {"workspace-gpt-oss-20b": "ready"},
    ),
    Example(
        "inference/kaito_workspace_llama-3.1_8b_instruct.yaml",
        [
            workspace(
                "v1beta1",
                "workspace-llama-3-1-8b-instruct",
                {"apps": "llama-3-1-8b-instruct"},
                preset="meta-llama/Llama-3.1-8B-Instruct",
                sku="Standard_NC96ads_A100_v4",
                options={"modelAccessSecret": "hf-token"},
            )
        ],
        {"workspace-llama-3-1-8b-instruct": "ready"},
    ),
    Example(
        "inference/kaito_workspace_llama-3.3_70b_instruct.yaml",
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "hf-token"},
                "type": "Opaque",
                "data": {"HF_TOKEN": "<base64-encoded-huggingface-token>"},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "llama-inference-params"},
                "data": {
                    "inference_config.yaml": "vllm:\n  cpu-offload-gb: 0\n"
                    "  gpu-memory-utilization: 0.95\n  swap-space: 4\n  max-model-len: 16384\n"
                },
            },
            workspace(
                "v1beta1",
                "workspace-llama-3-3-70b-instruct",
                {"apps": "llama-3-3-70b-instruct"},
                inference={
                    "preset": {
                        "name": "meta-llama/Llama-3.3-70B-Instruct",
                        "presetOptions": {"modelAccessSecret": "hf-token"},
                    },
                    "config": "llama-inference-params",
                },
                sku="Standard_NC48ads_A100_v4",
                resource={"count": 2},
            ),
        ],
        # The Secret's placeholder is no base64: the apiserver refuses it, as under KAITO.
        {"hf-token": "refused:illegal base64", "workspace-llama-3-3-70b-instruct": "ready"},
    ),
    Example(
        "inference/kaito_workspace_mistral-3-3b-instruct-2512.yaml",
        [
            workspace(
                "v1beta1",
                "workspace-mistral-3-3b-instruct-2512",
                {"apps": "mistral-3-3b-instruct-2512"},
                preset="mistralai/Ministral-3-3B-Instruct-2512",
                sku="Standard_NC80adis_H100_v5",
            )
        ],
        {"workspace-mistral-3-3b-instruct-2512": "ready"},
    ),
    Example(
        "inference/kaito_workspace_mistral-medium-3.5.yaml",
        [
            workspace(
                "v1beta1",
                "workspace-mistral-medium",
                {"apps": "mistral-medium"},
                preset="mistralai/Mistral-Small-4-119B-2603",
                sku=A100,
                options={"modelAccessSecret": "hf-secret"},
            )
        ],
        {"workspace-mistral-medium": "ready"},
    ),
    *(
        Example(
            f"inference/kaito_workspace_{file}.yaml",
            [workspace("v1beta1", name, labels, preset=preset, sku=A100)],
            {name: "ready"},
        )
        for file, name, labels, preset in (
            (
                "phi_3.5-instruct",
                "workspace-phi-3-5-mini",
                {"apps": "phi-3-5"},
                "microsoft/Phi-3.5-mini-instruct",
            ),
            (
                "phi_3_medium_128k",
                "workspace-phi-3-medium",
                {"apps": "phi-3"},
                "microsoft/Phi-3-medium-128k-instruct",
            ),
            (
                "phi_3_mini_4k",
                "workspace-phi-3-mini",
                {"apps": "phi-3"},
                "microsoft/Phi-3-mini-4k-instruct",
            ),
            (
                "qwen_2.5_coder_32b-instruct",
                "workspace-qwen-2-5-coder-32b-instruct",
                {"apps": "qwen"},
                "Qwen/Qwen2.5-Coder-32B-Instruct",
            ),
            (
                "qwen_2.5_coder_7b-instruct",
                "workspace-qwen-2-5-coder-7b-instruct",
                {"apps": "qwen-2-5-coder"},
                "Qwen/Qwen2.5-Coder-7B-Instruct",
            ),
        )
    ),
    Example(
        "inference/azure-linux-kaito-workspaces.yaml",
        [
            {
                "apiVersion": "kaito.sh/v1beta1",
                "kind": "Workspace",
                "metadata": {"name": "phi-2-azure-linux-workspace"},
                # This example nests the Workspace under `spec:`, which KAITO's API has not: the
                # apiserver refuses it under KAITO's CRD as under kairyu's.
                "spec": {
                    "resource": {
                        "instanceType": "Standard_NC12s_v3",
                        "count": 1,
                        "labelSelector": {"matchLabels": {"workload": "phi-2-inference"}},
                    },
                    "inference": {"preset": {"name": "phi-2"}},
                },
            }
        ],
        {"phi-2-azure-linux-workspace": "refused:field not declared in schema"},
    ),
    Example(
        "inference/arc-examples/kaito_workspace_phi_2.yaml",
        [
            workspace(
                "v1alpha1",
                "workspace-phi-2",
                {"apps": "llm-inference"},
                preset="phi-2",
                sku="Standard_NK6",
                resource={"preferredNodes": ["<your-arc-node-name>"]},
            )
        ],
        # An Azure Arc edge node size with no GPU figures in the catalog: it cannot be sized.
        {"workspace-phi-2": "planned-false:UnsupportedInstanceType"},
    ),
    Example(
        "inference/arc-examples/kaito_workspace_phi_3_with_adapters.yaml",
        [
            workspace(
                "v1alpha1",
                "workspace-phi-3-mini-adapter",
                {"apps": "llm-inference"},
                inference={
                    "preset": {"name": "phi-3-mini-128k-instruct"},
                    "adapters": [
                        {
                            "source": {
                                "name": "phi-3-adapter",
                                "image": "ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1",
                            },
                            "strength": "1.0",
                        }
                    ],
                },
                sku="Standard_NC4_A2",
                resource={"preferredNodes": ["<your-arc-node-name>"]},
            )
        ],
        {"workspace-phi-3-mini-adapter": "planned-false:UnsupportedInstanceType"},
    ),
    Example(
        "fine-tuning/kaito_workspace_tuning_falcon_7b_oai.yaml",
        [
            workspace(
                "v1alpha1",
                "workspace-tuning-falcon-7b-oai-chatbot",
                {"app": "tuning-falcon-7b-oai"},
                sku="Standard_NC12s_v3",
                tuning={
                    "preset": {
                        "name": "falcon-7b",
                        "accessMode": "private",
                        "presetOptions": {
                            "image": "aimodelsregistrytest.azurecr.io/kaito-falcon-7b:0.0.4"
                        },
                    },
                    "method": "qlora",
                    "config": "qlora-params-template",
                    "input": TUNING_INPUT,
                    "output": TUNING_OUTPUT,
                },
            )
        ],
        # Its config names a ConfigMap the example does not ship: the tuner waits for it.
        {"workspace-tuning-falcon-7b-oai-chatbot": "job-pending"},
    ),
]
SECOND_WAVE = [
    # Two of KAITO's files reuse the names above: applied once those are gone.
    Example(
        "inference/kaito_workspace_phi_3_medium_4k.yaml",
        [
            workspace(
                "v1beta1",
                "workspace-phi-3-medium",
                {"apps": "phi-3"},
                preset="microsoft/Phi-3-medium-4k-instruct",
                sku=A100,
            )
        ],
        {"workspace-phi-3-medium": "ready"},
    ),
    Example(
        "inference/kaito_workspace_phi_3_mini_128k.yaml",
        [
            workspace(
                "v1beta1",
                "workspace-phi-3-mini",
                {"apps": "phi-3"},
                preset="microsoft/Phi-3-mini-128k-instruct",
                sku=A100,
            )
        ],
        {"workspace-phi-3-mini": "ready"},
    ),
]


def _condition(obj: JSON, kind: str) -> JSON:
    found: JSON = next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), {}
    )
    return found


def _ended(kind: str, obj: JSON, expected: str) -> bool:
    if expected == "multirole-ready":
        return _condition(obj, "Ready").get("status") == "True"
    if expected == "multirole-not-ready":
        return (
            _condition(obj, "PrefillReady").get("reason") == "PrefillNotReady"
            and _condition(obj, "DecodeReady").get("reason") == "DecodeNotReady"
            and _condition(obj, "Ready").get("status") == "False"
        )
    if kind == "InferenceSet":
        return _condition(obj, "InferenceSetReady").get("status") == "True"
    if expected == "ready":
        return (obj.get("status") or {}).get("state") == "Ready"
    if expected == "succeeded":
        return (obj.get("status") or {}).get("state") == "Succeeded"
    if expected == "job-pending":
        return _condition(obj, "JobStarted").get("status") == "False"
    if expected.startswith("planned-false:"):
        planned = _condition(obj, "Planned")
        return planned.get("status") == "False" and planned.get("reason") == expected.split(":")[1]
    raise AssertionError(f"unknown expectation {expected}")


async def _apply_all(
    cluster: LocalCluster, namespace: str, examples: list[Example]
) -> dict[str, tuple[str, str]]:
    """Apply every document; the objects still to watch: name → (kind, expectation)."""
    watched: dict[str, tuple[str, str]] = {}
    for example in examples:
        for doc in example.docs:
            name = doc["metadata"]["name"]
            expected = example.expect.get(name, "applied")
            body = json.dumps({**doc, "metadata": {**doc["metadata"], "namespace": namespace}})
            refusal = ""
            try:
                await asyncio.to_thread(cluster.apply, body)
            except KubectlError as exc:
                refusal = str(exc)
            if refusal:
                assert expected.startswith("refused:"), f"{example.file}: {name}: {refusal}"
                assert expected.removeprefix("refused:") in refusal, f"{example.file}: {refusal}"
                continue
            assert not expected.startswith("refused:"), f"{example.file}: {name} was admitted"
            if expected != "applied":
                watched[name] = (doc["kind"], expected)
    return watched


async def _until_ended(
    kube: KubeClient, namespace: str, watched: dict[str, tuple[str, str]], timeout: float = 240
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    left = dict(watched)
    last: dict[str, JSON] = {}
    while left and loop.time() < deadline:
        for name, (kind, expected) in list(left.items()):
            resource = {
                "InferenceSet": resources.INFERENCESETS,
                "MultiRoleInference": resources.MULTIROLEINFERENCES,
            }.get(kind, resources.WORKSPACES)
            obj = await kube.get(resource, name, namespace=namespace)
            last[name] = obj.get("status") or {}
            if _ended(kind, obj, expected):
                del left[name]
        await asyncio.sleep(1.0)
    detail = {name: (watched[name][1], last.get(name)) for name in left}
    assert not left, f"not as expected: {json.dumps(detail, indent=1)[:6000]}"


@pytest.mark.timeout(600)
async def test_kaito_v012_examples_end_as_under_kaito(
    cluster: LocalCluster, namespace: str, kube: KubeClient, hub_system: ServiceStack
) -> None:
    watched = await _apply_all(cluster, namespace, EXAMPLES)
    await _until_ended(kube, namespace, watched)
    for example in SECOND_WAVE:
        for name in example.expect:
            await asyncio.to_thread(
                cluster.kubectl, "delete", "workspace", name, "-n", namespace, "--wait=true"
            )
    await _until_ended(kube, namespace, await _apply_all(cluster, namespace, SECOND_WAVE))

    # Everything goes, nodes included, within the test: ~40 GPU nodes draining after it would
    # slow the tests that follow.
    for kind in ("multiroleinferences", "inferencesets", "workspaces"):
        await asyncio.to_thread(
            cluster.kubectl, "delete", kind, "--all", "-n", namespace, "--wait=false"
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 180
    claims: list[JSON] = []
    while loop.time() < deadline:
        selector = f"kaito.sh/workspacenamespace={namespace}"
        claims = (await kube.list(resources.NODECLAIMS, label_selector=selector))["items"]
        if not claims:
            break
        await asyncio.sleep(1.0)
    assert claims == [], f"{len(claims)} NodeClaims left after deleting every example"
