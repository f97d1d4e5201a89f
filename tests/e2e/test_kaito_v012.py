"""What a KAITO v0.12 user does with a Workspace, through all five services on a real apiserver.

`kubectl scale workspace` (the scale subresource on `spec.replicas`) adds and frees GPU
nodes of the planned SKU; `kubectl get workspace` shows WorkspaceSucceeded for a ready inference
Workspace, and `-o wide` the SKU kairyu chose when the Workspace names none. A Hugging Face model
id is sized from the Hub (a local endpoint speaking its API, read by the real huggingface_hub
client) and served with `--model`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest

from kairyu_core.kube import KubeClient, errors, resources
from kairyu_localenv import LocalCluster
from kairyu_testing.fakehub import GATED_1B, LLAMA_8B, LLAMA_70B, NO_CONFIG, TOKEN
from kairyu_testing.seeds import seed
from kairyu_testing.stack import ServiceStack
from kairyu_testing.workspaces import has_reason, is_true, until

pytestmark = pytest.mark.e2e


def _unnamed_sku(name: str, namespace: str) -> dict[str, Any]:
    doc = seed("inference")
    doc["apiVersion"] = "kaito.sh/v1beta1"
    doc["metadata"] = {"name": name, "namespace": namespace}
    del doc["resource"]["instanceType"]
    return doc


def _table(
    cluster: LocalCluster, namespace: str, *extra: str, kind: str = "workspace"
) -> dict[str, str]:
    """The first row of `kubectl get <kind>` as kubectl prints it, by column.

    Cut at the header's column starts, since an empty cell (KAITO's Instance, when the
    Workspace names no SKU) leaves only spaces.
    """
    out = cluster.kubectl("get", kind, "-n", namespace, *extra).stdout.splitlines()
    header, row = out[0], out[1]
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    bounds = [*starts[1:], None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, bounds, strict=True)}


async def _claims(kube: KubeClient, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"kaito.sh/workspace={name},kaito.sh/workspacenamespace={namespace}"
    listed = await kube.list(resources.NODECLAIMS, label_selector=selector)
    return [c for c in listed["items"] if not c["metadata"].get("deletionTimestamp")]


async def _until_replicas(
    kube: KubeClient, namespace: str, name: str, replicas: int, timeout: float = 90
) -> dict[str, Any]:
    def ready(obj: dict[str, Any]) -> bool:
        status = obj.get("status") or {}
        inference = status.get("inference") or {}
        generation = obj["metadata"]["generation"]
        return (
            inference.get("replicas") == replicas
            and inference.get("readyReplicas") == replicas
            and is_true("WorkspaceReady")(obj)
            and (status.get("plan") or {}).get("observedGeneration") == generation
        )

    return await until(kube, namespace, name, ready, what=f"{replicas} replicas", timeout=timeout)


async def test_kubectl_scale_adds_and_frees_gpu_nodes_and_get_shows_kaito_s_columns(
    cluster: LocalCluster, namespace: str, kube: KubeClient, hub_system: ServiceStack
) -> None:
    await asyncio.to_thread(cluster.apply, _unnamed_sku("scaled", namespace))
    ready = await _until_replicas(kube, namespace, "scaled", 1)
    sku = ready["status"]["plan"]["instanceType"]
    assert ready["spec"]["replicas"] == 1  # the apiserver's default

    row = await asyncio.to_thread(_table, cluster, namespace)
    assert (row["INSTANCE"], row["WORKSPACESUCCEEDED"], row["STATE"]) == ("", "True", "Ready")
    assert "PLANNEDINSTANCE" not in row  # KAITO's columns only, unless -o wide
    wide = await asyncio.to_thread(_table, cluster, namespace, "-o", "wide")
    assert (wide["PLANNEDINSTANCE"], wide["NODES"]) == (sku, "1")
    assert ready["status"]["runtime"]["engine"] == "vllm"

    await asyncio.to_thread(
        cluster.kubectl, "scale", "workspace", "scaled", "-n", namespace, "--replicas=3"
    )
    three = await _until_replicas(kube, namespace, "scaled", 3)
    assert three["status"]["plan"]["instanceType"] == sku  # more nodes of the same SKU
    assert len(three["status"]["workerNodes"]) == 3
    assert len(await _claims(kube, namespace, "scaled")) == 3
    scale = json.loads(
        (
            await asyncio.to_thread(
                cluster.kubectl,
                "get",
                "workspace",
                "scaled",
                "-n",
                namespace,
                "--subresource=scale",
                "-o",
                "json",
            )
        ).stdout
    )
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (3, 3)
    assert "kaito.sh/workspace=scaled" in scale["status"]["selector"]
    deployment = await kube.get(resources.DEPLOYMENTS, "scaled", namespace=namespace)
    assert deployment["spec"]["replicas"] == 3

    await asyncio.to_thread(
        cluster.kubectl, "scale", "workspace", "scaled", "-n", namespace, "--replicas=1"
    )
    one = await _until_replicas(kube, namespace, "scaled", 1)
    assert len(one["status"]["workerNodes"]) == 1
    for _ in range(300):  # the two surplus NodeClaims are deleted (their nodes freed)
        if len(await _claims(kube, namespace, "scaled")) == 1:
            break
        await asyncio.sleep(0.2)
    assert len(await _claims(kube, namespace, "scaled")) == 1


async def test_scaling_a_workspace_to_zero_is_refused_by_the_apiserver(
    cluster: LocalCluster, namespace: str, kube: KubeClient
) -> None:
    await asyncio.to_thread(cluster.apply, _unnamed_sku("nonzero", namespace))
    refused = await asyncio.to_thread(
        cluster.kubectl,
        "scale",
        "workspace",
        "nonzero",
        "-n",
        namespace,
        "--replicas=0",
        check=False,
    )
    assert refused.returncode != 0
    assert "spec.replicas" in refused.stderr


def _hf(name: str, namespace: str, repo: str, sku: str | None = None) -> dict[str, Any]:
    doc = _unnamed_sku(name, namespace)
    doc["inference"]["preset"] = {"name": repo}
    if sku is not None:
        doc["resource"]["instanceType"] = sku
    return doc


async def test_hugging_face_ids_are_sized_from_the_hub_and_served_with_model(
    cluster: LocalCluster, namespace: str, kube: KubeClient, hub_system: ServiceStack
) -> None:
    await asyncio.to_thread(cluster.apply, _hf("llama8b", namespace, LLAMA_8B.repo))
    await asyncio.to_thread(
        cluster.apply, _hf("llama70b", namespace, LLAMA_70B.repo, "Standard_NC24ads_A100_v4")
    )
    small = await until(
        kube, namespace, "llama8b", is_true("WorkspaceReady"), what="8B", timeout=90
    )
    big = await until(
        kube, namespace, "llama70b", is_true("WorkspaceReady"), what="70B", timeout=90
    )

    plan = small["status"]["plan"]
    # As its catalog twin llama-3.1-8b-instruct is planned: the cheapest fit is two 16 GiB T4
    # nodes ($1.05/h), pipeline-parallel.
    assert (plan["instanceType"], plan["nodeCount"]) == ("Standard_NC4as_T4_v3", 2)
    assert f"--model={LLAMA_8B.repo}" in plan["runtimeArgs"]
    assert f"--revision={LLAMA_8B.commit}" in plan["runtimeArgs"]
    workload = await kube.get(resources.STATEFULSETS, "llama8b", namespace=namespace)
    command = workload["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert f"--model={LLAMA_8B.repo}" in command
    assert "--served-model-name=llama-3.1-8b-instruct" in command

    # 131.42 GiB of weights on 80 GiB A100s: two nodes, pipeline-parallel, one StatefulSet.
    plan = big["status"]["plan"]
    assert (plan["nodeCount"], plan["pipelineParallelSize"]) == (2, 2)
    assert len(big["status"]["workerNodes"]) == 2
    statefulset = await kube.get(resources.STATEFULSETS, "llama70b", namespace=namespace)
    assert statefulset["spec"]["replicas"] == 2


async def test_a_model_the_hub_cannot_size_or_open_gets_planned_false_with_the_reason(
    cluster: LocalCluster, namespace: str, kube: KubeClient, hub_system: ServiceStack
) -> None:
    await asyncio.to_thread(cluster.apply, _hf("noconfig", namespace, NO_CONFIG.repo))
    refused = await until(
        kube,
        namespace,
        "noconfig",
        has_reason("Planned", "ModelMetadataUnreadable"),
        what="Planned=False",
    )
    planned = next(c for c in refused["status"]["conditions"] if c["type"] == "Planned")
    assert planned["status"] == "False"
    assert "has no config.json" in planned["message"]
    assert "plan" not in refused["status"]

    gated = _hf("gated", namespace, GATED_1B.repo)
    await asyncio.to_thread(cluster.apply, gated)
    locked = await until(
        kube, namespace, "gated", has_reason("Planned", "ModelMetadataUnreadable"), what="gated"
    )
    assert "modelAccessSecret" in str(locked["status"]["conditions"])
    # With the token in the Secret the Workspace names, the planner can read the model.
    await asyncio.to_thread(
        cluster.kubectl,
        "create",
        "secret",
        "generic",
        "hf-token",
        "-n",
        namespace,
        f"--from-literal=HF_TOKEN={TOKEN}",
    )
    gated["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    await asyncio.to_thread(cluster.apply, gated)
    opened = await until(kube, namespace, "gated", is_true("Planned"), what="gated, with token")
    assert opened["status"]["plan"]["model"] == GATED_1B.repo


def _inference_set(name: str, namespace: str, replicas: int) -> dict[str, Any]:
    """KAITO's documented InferenceSet shape; no instanceType, so kairyu picks the SKU."""
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "labelSelector": {"matchLabels": {"apps": name}},
            "template": {"inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}},
        },
    }


async def _until_set(
    kube: KubeClient, namespace: str, name: str, ready: int, timeout: float = 120
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: dict[str, Any] = {}
    while loop.time() < deadline:
        found = await kube.get(resources.INFERENCESETS, name, namespace=namespace)
        status = found.get("status") or {}
        condition: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c["type"] == "InferenceSetReady"), {}
        )
        if (
            status.get("readyReplicas") == ready
            and status.get("replicas") == ready
            and condition.get("status") == "True"
        ):
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(
        f"{name}: {ready} ready replicas not reached; status {found.get('status')}"
    )


async def _namespace_claims(kube: KubeClient, namespace: str) -> list[dict[str, Any]]:
    """Every NodeClaim of the namespace's Workspaces, being deleted or not."""
    selector = f"kaito.sh/workspacenamespace={namespace}"
    return list((await kube.list(resources.NODECLAIMS, label_selector=selector))["items"])


async def _until_claims(kube: KubeClient, namespace: str, count: int, timeout: float = 90) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    claims: list[dict[str, Any]] = []
    while loop.time() < deadline:
        claims = await _namespace_claims(kube, namespace)
        if len(claims) == count:
            return
        await asyncio.sleep(0.3)
    names = [c["metadata"]["name"] for c in claims]
    raise AssertionError(f"{count} NodeClaims expected, {len(claims)} there: {names}")


async def _scale(cluster: LocalCluster, namespace: str, name: str, replicas: int) -> None:
    await asyncio.to_thread(
        cluster.kubectl,
        "scale",
        "inferenceset",
        name,
        "-n",
        namespace,
        f"--replicas={replicas}",
    )


async def test_an_inference_set_scales_its_gpu_nodes_to_zero_and_back_and_leaves_nothing(
    cluster: LocalCluster, namespace: str, kube: KubeClient, hub_system: ServiceStack
) -> None:
    await asyncio.to_thread(cluster.apply, _inference_set("phi", namespace, 3))
    three = await _until_set(kube, namespace, "phi", 3)
    await _until_claims(kube, namespace, 3)
    assert three["status"]["selector"] == "inferenceset.kaito.sh/created-by=phi"
    # One cost figure for the set: three times the cheapest fit for phi-3-mini ($0.53/h each).
    assert three["status"]["estimatedCostPerHour"] == "1.59"
    row = await asyncio.to_thread(_table, cluster, namespace, kind="inferenceset")
    assert (row["REPLICAS"], row["READYREPLICAS"]) == ("3", "3")
    children = await kube.list(
        resources.WORKSPACES,
        namespace=namespace,
        label_selector="inferenceset.kaito.sh/created-by=phi",
    )
    names = sorted(c["metadata"]["name"] for c in children["items"])
    assert len(names) == 3
    oldest = min(
        (c["metadata"]["creationTimestamp"], c["metadata"]["name"]) for c in children["items"]
    )[1]
    assert all(n.startswith("phi-") and len(n) == len("phi-") + 5 for n in names)

    await _scale(cluster, namespace, "phi", 5)
    await _until_set(kube, namespace, "phi", 5)
    await _until_claims(kube, namespace, 5)

    await _scale(cluster, namespace, "phi", 1)
    one = await _until_set(kube, namespace, "phi", 1)
    await _until_claims(kube, namespace, 1)
    kept = await kube.list(
        resources.WORKSPACES,
        namespace=namespace,
        label_selector="inferenceset.kaito.sh/created-by=phi",
    )
    live = [c for c in kept["items"] if not c["metadata"].get("deletionTimestamp")]
    assert [c["metadata"]["name"] for c in live] == [oldest]  # the newest went first
    assert one["status"]["estimatedCostPerHour"] == "0.53"

    await _scale(cluster, namespace, "phi", 0)
    await _until_claims(kube, namespace, 0)  # every GPU node freed
    zero = await kube.get(resources.INFERENCESETS, "phi", namespace=namespace)
    assert zero["status"]["replicas"] == 0

    await _scale(cluster, namespace, "phi", 2)
    await _until_set(kube, namespace, "phi", 2)
    await _until_claims(kube, namespace, 2)

    await asyncio.to_thread(
        cluster.kubectl, "delete", "inferenceset", "phi", "-n", namespace, "--wait=false"
    )
    await _until_claims(kube, namespace, 0)
    for _ in range(300):
        left = await kube.list(resources.WORKSPACES, namespace=namespace)
        if not left["items"]:
            break
        await asyncio.sleep(0.3)
    assert left["items"] == []


def _multirole(name: str, namespace: str) -> dict[str, Any]:
    """KAITO's phi-4-mini MultiRoleInference example, with two decode replicas."""
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "MultiRoleInference",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "labelSelector": {"matchLabels": {"apps": name}},
            "model": {"name": "phi-4-mini-instruct"},
            "roles": [
                {"type": "prefill", "replicas": 1, "instanceType": "Standard_NC24ads_A100_v4"},
                {"type": "decode", "replicas": 2, "instanceType": "Standard_NC24ads_A100_v4"},
            ],
        },
    }


async def _until_multirole(
    kube: KubeClient, namespace: str, name: str, decode: int, timeout: float = 120
) -> dict[str, Any]:
    """The MultiRoleInference once Ready with `decode` ready decode replicas."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: dict[str, Any] = {}
    while loop.time() < deadline:
        await asyncio.sleep(0.3)
        try:
            found = await kube.get(resources.MULTIROLEINFERENCES, name, namespace=namespace)
            sets = await kube.list(resources.INFERENCESETS, namespace=namespace)
        except errors.UnavailableError:
            continue  # a CRD's storage the apiserver (re)initializes: a moment later
        said = {c["type"]: c["status"] for c in (found.get("status") or {}).get("conditions") or []}
        decoding: dict[str, Any] = next(
            (s for s in sets["items"] if s["metadata"]["name"] == f"{name}-decode"), {}
        )
        if (
            said.get("Ready") == "True"
            and (decoding.get("status") or {}).get("readyReplicas") == decode
        ):
            return found
    raise AssertionError(f"{name}: not Ready with {decode} decode replicas; {found.get('status')}")


def _said(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}


def _applied_spec(cluster: LocalCluster, doc: dict[str, Any]) -> dict[str, Any]:
    """The spec the apiserver holds for what `doc` applied (defaults included), by a dry run."""
    out = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-o", "json", "-f", "-",
        input=json.dumps(doc),
    )  # fmt: skip
    spec: dict[str, Any] = json.loads(out.stdout)["spec"]
    return spec


async def _until_condition(
    kube: KubeClient, namespace: str, name: str, kind: str, *, says: str, timeout: float = 60
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: dict[str, Any] = {}
    while loop.time() < deadline:
        with contextlib.suppress(errors.NotFoundError, errors.UnavailableError):
            found = await kube.get(resources.MULTIROLEINFERENCES, name, namespace=namespace)
            conditions = (found.get("status") or {}).get("conditions") or []
            if any(c["type"] == kind and says in c.get("message", "") for c in conditions):
                return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"{name}: {kind} never said {says!r}; {found.get('status')}")


async def _until_set_spec(
    kube: KubeClient, namespace: str, name: str, replicas: int, timeout: float = 60
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: dict[str, Any] = {}
    while loop.time() < deadline:
        found = await kube.get(resources.INFERENCESETS, name, namespace=namespace)
        if found["spec"].get("replicas") == replicas:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(
        f"{name}: replicas {found.get('spec', {}).get('replicas')}, not {replicas}"
    )


@pytest.mark.timeout(300)  # its waits are bounded; together they pass the default of 120 s
async def test_a_multirole_inference_serves_prefill_and_decode_and_leaves_nothing(
    cluster: LocalCluster, namespace: str, kube: KubeClient, hub_system: ServiceStack
) -> None:
    # A set of someone else's already holds the prefill role's name: never written over.
    stranger = _inference_set("phi-pd-prefill", namespace, 0)
    await asyncio.to_thread(cluster.apply, stranger)
    await asyncio.to_thread(cluster.apply, _multirole("phi-pd", namespace))
    blocked = await _until_condition(
        kube,
        namespace,
        "phi-pd",
        "PrefillReady",
        says="exists and is not this MultiRoleInference's",
    )
    assert _said(blocked)["Ready"] == "False"
    held = await kube.get(resources.INFERENCESETS, "phi-pd-prefill", namespace=namespace)
    assert "ownerReferences" not in held["metadata"]
    assert held["spec"] == (await asyncio.to_thread(_applied_spec, cluster, stranger))
    await asyncio.to_thread(
        cluster.kubectl, "delete", "inferenceset", "phi-pd-prefill", "-n", namespace
    )
    ready = await _until_multirole(kube, namespace, "phi-pd", decode=2)
    said = {c["type"]: (c["status"], c["reason"]) for c in ready["status"]["conditions"]}
    assert said == {
        "PrefillReady": ("True", "PrefillReady"),
        "DecodeReady": ("True", "DecodeReady"),
        "InferencePoolReady": ("True", "InferencePoolReady"),
        "Ready": ("True", "Ready"),
    }
    await _until_claims(kube, namespace, 3)  # one A100 node per replica of either role
    # One cost figure for the pair: its sets' together, three A100 nodes at the catalog's price.
    sets = (await kube.list(resources.INFERENCESETS, namespace=namespace))["items"]
    costs = [float(s["status"]["estimatedCostPerHour"]) for s in sets]
    assert len(costs) == 2
    pair = float(ready["status"]["estimatedCostPerHour"])
    assert pair == pytest.approx(sum(costs), abs=0.001)
    assert pair == pytest.approx(3 * 3.67, abs=0.02)
    assert ready["status"]["nodeCount"] == 3
    row = await asyncio.to_thread(_table, cluster, namespace, kind="multiroleinference")
    assert (row["MODEL"], row["READY"]) == ("phi-4-mini-instruct", "True")
    # Each role's pods are started as that role: the runtime moves the KV cache over NIXL.
    for role, count in (("prefill", 1), ("decode", 2)):
        pods = await kube.list(
            resources.PODS, namespace=namespace, label_selector=f"kaito.sh/inference-role={role}"
        )
        assert len(pods["items"]) == count
        for pod in pods["items"]:
            assert pod["metadata"]["labels"]["multiroleinference.kaito.sh/created-by"] == "phi-pd"
            env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
            assert env["KAITO_INFERENCE_ROLE"]["value"] == role
            assert env["VLLM_NIXL_SIDE_CHANNEL_HOST"]["valueFrom"]["fieldRef"] == {
                "apiVersion": "v1",
                "fieldPath": "status.podIP",
            }

    # The parent wins over an edit of its set, as KAITO's: scaled by hand, it is set back.
    await _scale(cluster, namespace, "phi-pd-decode", 3)
    await _until_set_spec(kube, namespace, "phi-pd-decode", replicas=2)

    # A role's replicas are the parent's to set: one decode replica frees a GPU node.
    patch = {"spec": {"roles": [
        {"type": "prefill", "replicas": 1, "instanceType": "Standard_NC24ads_A100_v4"},
        {"type": "decode", "replicas": 1, "instanceType": "Standard_NC24ads_A100_v4"},
    ]}}  # fmt: skip
    await asyncio.to_thread(
        cluster.kubectl,
        "patch",
        "multiroleinference",
        "phi-pd",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps(patch),
    )
    await _until_claims(kube, namespace, 2)
    await _until_multirole(kube, namespace, "phi-pd", decode=1)

    await asyncio.to_thread(
        cluster.kubectl, "delete", "multiroleinference", "phi-pd", "-n", namespace, "--wait=false"
    )
    await _until_claims(kube, namespace, 0)  # every GPU node freed
    for _ in range(300):
        sets = await kube.list(resources.INFERENCESETS, namespace=namespace)
        left = await kube.list(resources.WORKSPACES, namespace=namespace)
        if not sets["items"] and not left["items"]:
            break
        await asyncio.sleep(0.3)
    assert sets["items"] == []
    # Nothing is left: no Workspace holds the provisioner's finalizer (a set deleted by the
    # garbage collector must not have a child replaced from a view that still shows the set).
    assert left["items"] == [], [
        (
            w["metadata"]["name"],
            w["metadata"].get("creationTimestamp"),
            w["metadata"].get("finalizers"),
            [(c["type"], c.get("message")) for c in w.get("status", {}).get("conditions", [])],
        )
        for w in left["items"]
    ]
