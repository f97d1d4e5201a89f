"""The planner's admission webhook, registered in the real apiserver, refuses what KAITO does.

It also never blocks the cluster: metadata-only updates and deletions pass whatever the settings
say now, a renewed certificate is served without a restart, and the webhook answers while NATS is
down.
"""

import asyncio
import contextlib
import json
import os
import ssl
import sys
import urllib.error
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kairyu_contracts.api import Workspace
from kairyu_contracts.catalog import Cloud
from kairyu_localenv import LocalCluster, admission, certs
from kairyu_localenv.cluster import KubectlError
from kairyu_localenv.processes import ManagedProcess, free_port, http_ok
from kairyu_planner import webhook
from kairyu_planner.settings import PlanningSettings
from kairyu_planner.validation import Verdict, validate
from kairyu_testing.seeds import seed


async def kubectl(cluster: LocalCluster, *args: str, manifest: dict[str, Any] | None = None) -> str:
    # In a thread: the webhook answers on this test's event loop while kubectl waits.
    data = json.dumps(manifest) if manifest is not None else None
    result = await asyncio.to_thread(cluster.kubectl, *args, input=data)
    return result.stdout


class Settings:
    """The planning settings the test's webhook validates with; a test may change them."""

    def __init__(self) -> None:
        self.planning = PlanningSettings()

    def validate(self, new: Workspace, old: Workspace | None) -> Verdict:
        return validate(new, old, planning=self.planning)


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def endpoint(tmp_path: Path) -> admission.WebhookEndpoint:
    return admission.prepare(tmp_path)


@pytest.fixture
async def registered(
    cluster: LocalCluster, namespace: str, endpoint: admission.WebhookEndpoint, settings: Settings
) -> AsyncIterator[str]:
    runner = await webhook.serve(
        host=endpoint.host,
        port=endpoint.port,
        cert=endpoint.cert,
        key=endpoint.key,
        validator=settings.validate,
    )
    try:
        async with registration(cluster, endpoint, namespace):
            yield namespace
    finally:
        # The apiserver keeps its TLS connections to the webhook open. A graceful close starts a
        # TLS shutdown the apiserver need not answer before this test's event loop closes, and the
        # socket left behind then warns as unclosed during a later test, at random: abort them.
        for connection in list(runner.server.connections if runner.server else []):
            if connection.transport is not None:
                connection.transport.abort()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def registration(
    cluster: LocalCluster, endpoint: admission.WebhookEndpoint, namespace: str
) -> AsyncIterator[None]:
    name = f"kairyu-test-{namespace}"
    # Only this test's namespace: the session's other tests never meet this webhook.
    config = admission.registration(endpoint, name=name, namespace=namespace)
    await kubectl(cluster, "apply", "-f", "-", manifest=config)
    try:
        await wait_until_active(cluster, namespace)
        yield
    finally:
        await kubectl(cluster, "delete", "validatingwebhookconfiguration", name)


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


async def test_a_workspace_made_invalid_by_a_settings_change_can_still_lose_its_finalizer(
    cluster: LocalCluster, registered: str, settings: Settings
) -> None:
    doc = seed("inference")
    doc["metadata"]["finalizers"] = ["kairyu.test/hold"]
    await kubectl(cluster, "apply", "-n", registered, "-f", "-", manifest=doc)
    # The planner now plans for another cloud: the Workspace's instance type is no longer valid.
    settings.planning = PlanningSettings(cloud=Cloud.AWS)
    name = doc["metadata"]["name"]
    await kubectl(cluster, "label", "workspace", name, "-n", registered, "team=a")
    await kubectl(cluster, "delete", "workspace", name, "-n", registered, "--wait=false")
    remove = json.dumps([{"op": "remove", "path": "/metadata/finalizers"}])
    await kubectl(
        cluster, "patch", "workspace", name, "-n", registered, "--type=json", "-p", remove
    )
    with pytest.raises(KubectlError, match="NotFound"):
        await kubectl(cluster, "get", "workspace", name, "-n", registered)


async def test_a_workspace_being_deleted_cannot_swap_in_a_host_path_template(
    cluster: LocalCluster, registered: str
) -> None:
    doc = seed("inference")
    del doc["inference"]["preset"]
    container = {"name": "server", "image": "example.com/server:1"}
    doc["inference"]["template"] = {"spec": {"containers": [container]}}
    doc["metadata"]["finalizers"] = ["kairyu.test/hold"]
    name = doc["metadata"]["name"]
    await kubectl(cluster, "apply", "-n", registered, "-f", "-", manifest=doc)
    await kubectl(cluster, "delete", "workspace", name, "-n", registered, "--wait=false")
    # The finalizer keeps it, and the pods built from its spec, alive: its spec is still checked.
    host_root = {
        "spec": {
            "containers": [container],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        }
    }
    swap = json.dumps({"inference": {"template": host_root}})
    with pytest.raises(KubectlError, match="volume type hostPath is not allowed"):
        await kubectl(
            cluster, "patch", "workspace", name, "-n", registered, "--type=merge", "-p", swap
        )
    live = json.loads(await kubectl(cluster, "get", "workspace", name, "-n", registered, "-o=json"))
    assert "volumes" not in live["inference"]["template"]["spec"]
    # Removing the finalizer (metadata only) is still admitted.
    remove = json.dumps([{"op": "remove", "path": "/metadata/finalizers"}])
    await kubectl(
        cluster, "patch", "workspace", name, "-n", registered, "--type=json", "-p", remove
    )
    with pytest.raises(KubectlError, match="NotFound"):
        await kubectl(cluster, "get", "workspace", name, "-n", registered)


def served_certificate(endpoint: admission.WebhookEndpoint) -> str:
    return ssl.get_server_certificate((endpoint.host, endpoint.port), timeout=5)


async def test_a_renewed_certificate_is_served_from_the_next_connection_on(
    cluster: LocalCluster, registered: str, endpoint: admission.WebhookEndpoint, tmp_path: Path
) -> None:
    before = await asyncio.to_thread(served_certificate, endpoint)
    assert before.strip() == endpoint.cert.read_text().strip()
    # What cert-manager and the kubelet do: a new pair from the same CA, swapped in at once.
    ca = certs.load_ca(certs.KeyPair(endpoint.ca, endpoint.ca.with_suffix(".key")))
    directory = tmp_path / "renewed"
    directory.mkdir()
    renewed = certs.issue(
        ca, directory, name="webhook", common_name="kairyu-planner", hosts=(endpoint.host,)
    )
    os.replace(renewed.key, endpoint.key)
    os.replace(renewed.cert, endpoint.cert)
    after = await asyncio.to_thread(served_certificate, endpoint)
    assert after.strip() == endpoint.cert.read_text().strip()
    assert after != before
    # The apiserver trusts the renewed certificate (same CA): admission goes on.
    await kubectl(cluster, "apply", "-n", registered, "-f", "-", manifest=seed("inference"))


async def test_workspaces_are_admitted_while_nats_is_down(
    cluster: LocalCluster, namespace: str, endpoint: admission.WebhookEndpoint, tmp_path: Path
) -> None:
    health_port = free_port()
    env = {
        "KAIRYU_NATS__URL": f"nats://127.0.0.1:{free_port()}",  # nothing listens there
        "KAIRYU_HEALTH_PORT": str(health_port),
        "KAIRYU_KUBE__KUBECONFIG": str(cluster.kubeconfig),
        "KAIRYU_NAMESPACE": namespace,
        "KAIRYU_LOG__FORMAT": "text",
        **endpoint.env(),
    }
    planner = ManagedProcess(
        "planner", [sys.executable, "-m", "kairyu_planner"], log_dir=tmp_path, env=env
    )
    planner.start()
    try:
        context = endpoint.client_context()
        await asyncio.to_thread(
            planner.wait_until,
            http_ok(endpoint.health_url, context=context),
            timeout=15,
            what="the webhook without NATS",
        )
        readyz = endpoint.health_url.replace("/healthz", "/readyz")
        assert await asyncio.to_thread(http_ok(readyz, context=context))
        # The pod's startup and liveness probes: served without NATS, or the kubelet would
        # restart a planner whose NATS is down (and its webhook with it); /readyz says NATS is out.
        health = f"http://127.0.0.1:{health_port}"
        await asyncio.to_thread(
            planner.wait_until, http_ok(f"{health}/healthz"), timeout=15, what="/healthz"
        )
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            await asyncio.to_thread(http_ok(f"{health}/readyz"))
        not_ready.value.close()
        assert not_ready.value.code == 503
        async with registration(cluster, endpoint, namespace):
            await kubectl(cluster, "apply", "-n", namespace, "-f", "-", manifest=seed("inference"))
    finally:
        planner.stop()


def _multirole(namespace: str, model: str = "phi-4-mini-instruct") -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "MultiRoleInference",
        "metadata": {"name": "phi-4-pd", "namespace": namespace},
        "spec": {
            "labelSelector": {"matchLabels": {"apps": "phi-4-pd"}},
            "model": {"name": model},
            "roles": [
                {"type": "prefill", "replicas": 1, "instanceType": "Standard_NC24ads_A100_v4"},
                {"type": "decode", "replicas": 1, "instanceType": "Standard_NC24ads_A100_v4"},
            ],
        },
    }


async def test_a_multirole_inference_is_judged_by_kaitos_rules_and_its_roles_workspaces(
    cluster: LocalCluster, registered: str
) -> None:
    with pytest.raises(KubectlError, match=r"spec\.roles\[prefill\]: Unsupported preset name"):
        await kubectl(cluster, "apply", "-f", "-", manifest=_multirole(registered, "no-such"))
    two_prefills = _multirole(registered)
    two_prefills["spec"]["roles"][1]["type"] = "prefill"
    with pytest.raises(KubectlError, match="exactly one prefill and one decode role required"):
        await kubectl(cluster, "apply", "-f", "-", manifest=two_prefills)
    await kubectl(cluster, "apply", "-f", "-", manifest=_multirole(registered))
    renamed = json.dumps({"spec": {"model": {"name": "phi-4"}}})
    with pytest.raises(KubectlError, match='model name is immutable, was "phi-4-mini-instruct"'):
        await kubectl(
            cluster,
            "patch",
            "multiroleinference",
            "phi-4-pd",
            "-n",
            registered,
            "--type=merge",
            "-p",
            renamed,
        )
    # A role's replicas may change: only the safety rules judge the unchanged template.
    scaled = _multirole(registered)
    scaled["spec"]["roles"][1]["replicas"] = 3
    await kubectl(cluster, "apply", "-f", "-", manifest=scaled)
