"""The planner's admission webhook, registered in the real apiserver, refuses what KAITO does."""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kairyu_core.localenv import LocalCluster, admission
from kairyu_core.localenv.cluster import KubectlError
from kairyu_core.testing.manifests import seed
from kairyu_planner import webhook


async def kubectl(cluster: LocalCluster, *args: str, manifest: dict[str, Any] | None = None) -> str:
    # In a thread: the webhook answers on this test's event loop while kubectl waits.
    data = json.dumps(manifest) if manifest is not None else None
    result = await asyncio.to_thread(cluster.kubectl, *args, input=data)
    return result.stdout


@pytest.fixture
async def registered(cluster: LocalCluster, namespace: str, tmp_path: Path) -> AsyncIterator[str]:
    endpoint = admission.prepare(tmp_path)
    runner = await webhook.serve(
        host=endpoint.host, port=endpoint.port, cert=endpoint.cert, key=endpoint.key
    )
    name = f"kairyu-test-{namespace}"
    # Only this test's namespace: the session's other tests never meet this webhook.
    config = admission.registration(endpoint, name=name, namespace=namespace)
    await kubectl(cluster, "apply", "-f", "-", manifest=config)
    try:
        await wait_until_active(cluster, namespace)
        yield namespace
    finally:
        await kubectl(cluster, "delete", "validatingwebhookconfiguration", name)
        await runner.cleanup()


async def wait_until_active(cluster: LocalCluster, namespace: str) -> None:
    probe = seed("inference")
    probe["metadata"]["annotations"] = {"kaito.sh/runtime": "not-a-runtime"}
    for _ in range(100):
        try:
            await kubectl(
                cluster, "create", "--dry-run=server", "-n", namespace, "-f", "-", manifest=probe
            )
        except KubectlError as exc:
            if "kaito.sh/runtime" in str(exc):
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the webhook never became active")


async def test_changing_the_preset_is_refused_with_kaitos_message(
    cluster: LocalCluster, registered: str
) -> None:
    await kubectl(cluster, "apply", "-n", registered, "-f", "-", manifest=seed("inference"))
    patch = json.dumps({"inference": {"preset": {"name": "phi-4"}}})
    with pytest.raises(KubectlError, match=r"field is immutable: inference\.preset"):
        await kubectl(
            cluster,
            "patch",
            "workspace",
            "workspace-phi-3-mini",
            "-n",
            registered,
            "--type=merge",
            "-p",
            patch,
        )
    stored = json.loads(
        await kubectl(
            cluster, "get", "workspace", "workspace-phi-3-mini", "-n", registered, "-o", "json"
        )
    )
    assert stored["inference"]["preset"]["name"] == "phi-3-mini-4k-instruct"


async def test_a_tuning_input_on_the_metadata_address_is_refused(
    cluster: LocalCluster, registered: str
) -> None:
    doc = seed("tuning")
    doc["tuning"]["input"]["urls"] = [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    ]
    with pytest.raises(
        KubectlError, match=r"tuning.input.urls\[0\]: address 169.254.169.254 is not allowed"
    ):
        await kubectl(cluster, "apply", "-n", registered, "-f", "-", manifest=doc)


async def test_reserved_labels_warn_but_pass(cluster: LocalCluster, registered: str) -> None:
    doc = seed("inference")
    doc["resource"]["labelSelector"]["matchLabels"]["kaito.sh/workspace"] = "x"
    result = await asyncio.to_thread(
        cluster.kubectl, "apply", "-n", registered, "-f", "-", input=json.dumps(doc)
    )
    assert "reserved label keys" in result.stderr  # kubectl prints admission warnings on stderr


async def test_too_little_gpu_memory_is_refused_unless_the_bypass_annotation_says_so(
    cluster: LocalCluster, registered: str
) -> None:
    doc = seed("inference")
    doc["inference"]["preset"]["name"] = "phi-4"
    doc["resource"]["instanceType"] = "Standard_NV36ads_A10_v5"
    with pytest.raises(KubectlError, match=r"phi-4 needs 27\.7 GiB .* 8\.4 GiB short"):
        await kubectl(cluster, "apply", "-n", registered, "-f", "-", manifest=doc)
    doc["metadata"]["annotations"] = {"kaito.sh/bypass-resource-checks": "True"}
    result = await asyncio.to_thread(
        cluster.kubectl, "apply", "-n", registered, "-f", "-", input=json.dumps(doc)
    )
    assert "Warning:" in result.stderr
    assert "8.4 GiB short" in result.stderr
