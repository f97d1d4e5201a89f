"""KubeClient.connect on a real apiserver, the ways a service authenticates in a cluster.

kairyu_core.kube loads only parts of kubernetes_asyncio (kube/_sdk.py); these check that its
in-cluster loader and a kubeconfig's exec credential plugin still work through those parts.
"""

import json
import stat
import sys
from pathlib import Path

import pytest
import yaml

from kairyu_core.kube import KubeClient
from kairyu_localenv import LocalCluster


def service_account_token(cluster: LocalCluster, namespace: str) -> str:
    cluster.wait_for_default_service_account(namespace)
    return cluster.kubectl("create", "token", "default", "-n", namespace).stdout.strip()


async def whoami(kube: KubeClient) -> str:
    review = await kube.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return str(review["status"]["userInfo"]["username"])


async def test_in_cluster_uses_the_service_account_token(
    cluster: LocalCluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text(service_account_token(cluster, namespace))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(cluster.ports["apiserver"]))
    # The loader's defaults are the pod's mount paths; point them at this test's files.
    monkeypatch.setattr(
        "kubernetes_asyncio.config.incluster_config.SERVICE_TOKEN_FILENAME", str(token)
    )
    monkeypatch.setattr(
        "kubernetes_asyncio.config.incluster_config.SERVICE_CERT_FILENAME", str(cluster.ca.cert)
    )

    async with await KubeClient.connect() as kube:
        assert await whoami(kube) == f"system:serviceaccount:{namespace}:default"


async def test_kubeconfig_exec_credential_plugin(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": service_account_token(cluster, namespace)},
    }
    plugin = tmp_path / "credential-plugin"
    plugin.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(credential))})\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [
        {
            "name": "admin",
            "user": {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": str(plugin),
                    "interactiveMode": "Never",
                }
            },
        }
    ]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))

    async with await KubeClient.connect(kubeconfig) as kube:
        assert await whoami(kube) == f"system:serviceaccount:{namespace}:default"
