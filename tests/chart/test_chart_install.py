"""`helm install` into a real control plane: pods run, RBAC is least privilege, PSS holds.

The chart gets a cluster of its own (not the session's), because it registers a cluster-wide
validating webhook and owns the Workspace CRD, which would collide with the other tests. kwok plays
the kubelet on one ordinary (non-GPU) node, so kairyu's pods become Running without their images.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from helm import CHART, NAMESPACE, RELEASE, helm

from kairyu_core.kube import KubeClient
from kairyu_localenv import LocalCluster, karpenter_kwok, keda
from kairyu_localenv.binaries import Binaries
from kairyu_localenv.nodes import kwok_node_manifest
from kairyu_localenv.processes import free_port
from kairyu_planner import certificates, webhook
from kairyu_testing.seeds import seed

pytestmark = pytest.mark.integration

SERVICES = ("watcher", "planner", "provisioner", "deployer", "tuner", "activator")


@pytest.fixture(scope="module")
def chart_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(Binaries.locate()) as cluster:
        capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        node = kwok_node_manifest("system-0", capacity=capacity)
        cluster.kubectl("create", "-f", "-", input=json.dumps(node))
        cluster.kubectl("wait", "--for=condition=Ready", "--timeout=60s", "node/system-0")
        # Karpenter's CRDs, so that `kubectl auth can-i` knows the NodeClaim resource.
        for crd in ("karpenter.sh_nodeclaims.yaml", "karpenter.sh_nodepools.yaml"):
            cluster.apply(karpenter_kwok.locate() / "crds" / crd)
        cluster.wait_for_crds("nodeclaims.karpenter.sh", "nodepools.karpenter.sh")
        # KEDA's ScaledObject CRD, for the planner's rights on autoscaled InferenceSets.
        cluster.apply(keda.locate() / "crds" / "keda.sh_scaledobjects.yaml")
        cluster.wait_for_crds("scaledobjects.keda.sh")
        cluster.create_namespace(NAMESPACE)
        cluster.kubectl(
            "label",
            "namespace",
            NAMESPACE,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest",
        )
        yield cluster


@pytest.fixture(scope="module")
def installed(chart_cluster: LocalCluster) -> LocalCluster:
    done = helm(
        "install",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--wait",
        "--timeout",
        "180s",
        kubeconfig=chart_cluster.kubeconfig,
    )
    assert done.returncode == 0, done.stderr
    return chart_cluster


def get(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", *args, "-o", "json").stdout))


def test_every_pod_runs_on_a_node_under_restricted_pod_security(installed: LocalCluster) -> None:
    pods = get(installed, "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/part-of=kairyu")
    items = pods["items"]
    assert isinstance(items, list)
    running = {
        p["metadata"]["labels"]["app.kubernetes.io/component"]: p
        for p in items
        if p["status"]["phase"] == "Running"
    }
    assert set(running) == set(SERVICES)
    assert {p["spec"]["nodeName"] for p in running.values()} == {"system-0"}
    # The namespace really enforces `restricted`: a pod that is not gets refused.
    refused = installed.kubectl(
        "run",
        "rooted",
        "-n",
        NAMESPACE,
        "--image=busybox",
        "--restart=Never",
        "--overrides",
        json.dumps({"spec": {"securityContext": {"runAsUser": 0}}}),
        check=False,
    )
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr


def test_the_crd_and_the_webhook_are_registered(installed: LocalCluster) -> None:
    crd = get(installed, "crd", "workspaces.kaito.sh")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    hook = get(installed, "validatingwebhookconfiguration", f"{RELEASE}-planner")
    (webhook,) = hook["webhooks"]
    assert webhook["clientConfig"]["service"]["name"] == f"{RELEASE}-planner"
    # Default mode: the chart renders no CA; the planner sets it (test below).
    assert "caBundle" not in webhook["clientConfig"]
    assert webhook["failurePolicy"] == "Fail"


def can(
    cluster: LocalCluster,
    service: str,
    verb: str,
    resource: str,
    *,
    namespace: str = "ml",
    release: str = RELEASE,
) -> bool:
    """`kubectl auth can-i` as the service's account; `resource/sub` checks a subresource."""
    account = f"system:serviceaccount:{NAMESPACE}:{release}-{service}"
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, "-n", namespace, "--as", account]
    if subresource:
        args.append(f"--subresource={subresource}")
    done = cluster.kubectl(*args, check=False)
    assert "doesn't have a resource type" not in done.stderr, done.stderr
    return done.stdout.strip() == "yes"


ALLOWED = [
    ("watcher", "watch", "workspaces.kaito.sh"),
    ("watcher", "patch", "workspaces.kaito.sh/status"),
    ("watcher", "watch", "pods"),
    # The names a Workspace's objects would take, for its Occupants (metadata-only watches).
    ("watcher", "watch", "configmaps"),
    ("watcher", "list", "services"),
    ("watcher", "watch", "networkpolicies.networking.k8s.io"),
    ("watcher", "create", "events"),  # SlowPhase
    ("planner", "patch", "workspaces.kaito.sh/status"),
    # An InferenceSet's replicas are Workspaces its controller (in the planner) makes.
    ("planner", "create", "workspaces.kaito.sh"),
    ("planner", "delete", "workspaces.kaito.sh"),
    ("planner", "patch", "inferencesets.kaito.sh/status"),
    ("watcher", "watch", "inferencesets.kaito.sh"),
    # A MultiRoleInference's roles are InferenceSets its controller (in the planner) applies.
    ("planner", "patch", "inferencesets.kaito.sh"),
    ("planner", "delete", "inferencesets.kaito.sh"),
    ("planner", "patch", "multiroleinferences.kaito.sh/status"),
    ("watcher", "watch", "multiroleinferences.kaito.sh"),
    ("provisioner", "create", "nodeclaims.karpenter.sh"),
    ("provisioner", "delete", "nodeclaims.karpenter.sh"),
    ("provisioner", "patch", "workspaces.kaito.sh"),
    ("provisioner", "create", "events"),
    ("deployer", "create", "deployments.apps"),
    ("deployer", "delete", "statefulsets.apps"),
    ("deployer", "create", "services"),
    ("tuner", "create", "jobs.batch"),
    ("tuner", "create", "configmaps"),
    # An autoscaled InferenceSet's ScaledObject (the planner) and its Service and activator
    # EndpointSlice while it is cold (the activator, server-side apply).
    ("planner", "create", "scaledobjects.keda.sh"),
    ("planner", "delete", "scaledobjects.keda.sh"),
    ("activator", "create", "services"),
    ("activator", "patch", "services"),
    ("activator", "create", "endpointslices.discovery.k8s.io"),
    ("activator", "delete", "endpointslices.discovery.k8s.io"),
]
DENIED = [
    ("watcher", "create", "deployments.apps"),
    ("watcher", "patch", "configmaps"),
    ("watcher", "delete", "workspaces.kaito.sh"),
    ("deployer", "patch", "workspaces.kaito.sh"),
    ("tuner", "patch", "workspaces.kaito.sh"),
    ("planner", "create", "nodeclaims.karpenter.sh"),
    ("planner", "list", "pods"),
    ("planner", "patch", "multiroleinferences.kaito.sh"),
    ("watcher", "patch", "inferencesets.kaito.sh"),
    ("watcher", "patch", "multiroleinferences.kaito.sh"),
    ("provisioner", "delete", "nodes"),
    ("provisioner", "create", "deployments.apps"),
    ("deployer", "delete", "nodes"),
    ("deployer", "create", "jobs.batch"),
    ("deployer", "create", "nodeclaims.karpenter.sh"),
    ("tuner", "create", "deployments.apps"),
    ("tuner", "delete", "nodes"),
    ("activator", "delete", "services"),
    ("activator", "create", "deployments.apps"),
    ("activator", "patch", "workspaces.kaito.sh"),
    ("activator", "list", "pods"),
    ("activator", "create", "scaledobjects.keda.sh"),
    ("deployer", "create", "endpointslices.discovery.k8s.io"),
    *((service, verb, "secrets") for service in SERVICES for verb in ("get", "list")),
    *((service, "create", "pods") for service in SERVICES),
    *((service, "create", "clusterrolebindings.rbac.authorization.k8s.io") for service in SERVICES),
]


def test_each_service_can_do_what_it_needs_and_nothing_more(installed: LocalCluster) -> None:
    missing = [case for case in ALLOWED if not can(installed, *case)]
    excess = [case for case in DENIED if can(installed, *case)]
    assert (missing, excess) == ([], [])


def test_with_a_watch_namespace_the_rights_stop_at_that_namespace(
    chart_cluster: LocalCluster,
) -> None:
    release = "scoped"
    chart_cluster.create_namespace("ml")
    done = helm(
        "install",
        release,
        str(CHART),
        "-n",
        NAMESPACE,
        "--set",
        "global.watchNamespace=ml",
        "--set",
        "crds.enabled=false",  # the other release owns the CRD
        "--wait",
        "--timeout",
        "180s",
        kubeconfig=chart_cluster.kubeconfig,
    )
    assert done.returncode == 0, done.stderr
    try:
        cases = [
            ("deployer", "create", "deployments.apps"),
            ("tuner", "create", "jobs.batch"),
            ("watcher", "watch", "pods"),
            ("provisioner", "patch", "workspaces.kaito.sh"),
            ("activator", "create", "endpointslices.discovery.k8s.io"),
            ("planner", "create", "scaledobjects.keda.sh"),
        ]
        for case in cases:
            assert can(chart_cluster, *case, release=release), case
            assert not can(chart_cluster, *case, namespace="elsewhere", release=release), case
        # Nodes and NodeClaims are cluster-scoped: those rights stay cluster-wide.
        assert can(
            chart_cluster, "provisioner", "create", "nodeclaims.karpenter.sh", release=release
        )
        assert can(chart_cluster, "watcher", "watch", "nodes", release=release)
        assert not can(chart_cluster, "deployer", "list", "nodes", release=release)
    finally:
        helm("uninstall", release, "-n", NAMESPACE, kubeconfig=chart_cluster.kubeconfig)


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_may_take_and_renew_only_its_own_lease(
    installed: LocalCluster, service: str
) -> None:
    # kwok plays the pods here, so no service runs: tests/integration/test_leadership.py runs
    # the election itself against a real apiserver.
    def may(who: str, verb: str, lease: str, namespace: str) -> bool:
        account = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-{who}"
        done = installed.kubectl(
            "auth", "can-i", verb, lease, "-n", namespace, "--as", account, check=False
        )
        return done.stdout.strip() == "yes"

    own = f"leases.coordination.k8s.io/{RELEASE}-{service}"
    assert may(service, "update", own, NAMESPACE)
    assert may(service, "create", "leases.coordination.k8s.io", NAMESPACE)
    # Not another Lease, not elsewhere: node heartbeats live in Leases too.
    assert not may(service, "update", "leases.coordination.k8s.io/other", NAMESPACE)
    assert not may(service, "update", own, "kube-node-lease")
    assert not may(service, "create", "leases.coordination.k8s.io", "kube-node-lease")
    other = "deployer" if service != "deployer" else "tuner"
    assert not may(other, "update", own, NAMESPACE)


def _planner_kubeconfig(cluster: LocalCluster, directory: Path) -> Path:
    """A kubeconfig that acts as the planner's ServiceAccount, with a token the apiserver issued."""
    account = f"{RELEASE}-planner"
    token = cluster.kubectl("create", "token", account, "-n", NAMESPACE).stdout.strip()
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path = directory / "planner.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_the_planner_issues_a_webhook_certificate_the_apiserver_can_trust(
    installed: LocalCluster, tmp_path: Path
) -> None:
    # kwok plays the planner's pod, so its certificate step runs here, with the planner's own
    # ServiceAccount: the chart's RBAC is enough for it, and no more (below).
    name = f"{RELEASE}-planner"
    target = certificates.CertificateTarget(
        namespace=NAMESPACE,
        secret=f"{name}-webhook-tls",
        service=name,
        configuration=name,
        validity=timedelta(days=3650),
    )
    async with await KubeClient.connect(_planner_kubeconfig(installed, tmp_path)) as kube:
        material = await certificates.ensure(kube, target, field_manager="kairyu-planner")
        assert await certificates.ensure(kube, target, field_manager="kairyu-planner") == material
    (hook,) = get(installed, "validatingwebhookconfiguration", name)["webhooks"]
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == material.ca

    # The pair answers an AdmissionReview for a client that, as the apiserver does, trusts only
    # the caBundle and checks the Service's DNS name (the local apiserver cannot reach a
    # Service: there is no kube-proxy, and kwok's pods serve nothing).
    cert, key = certificates.write(material, tmp_path)
    port = free_port()
    runner = await webhook.serve(host="127.0.0.1", port=port, cert=cert, key=key)
    try:
        trust = ssl.create_default_context(cadata=material.ca.decode())
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "u1", "operation": "CREATE", "object": seed("inference")},
        }
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                f"https://127.0.0.1:{port}{webhook.PATH}",
                json=review,
                ssl=trust,
                server_hostname=f"{name}.{NAMESPACE}.svc",
            )
            answer = await response.json()
        assert answer["response"] == {"uid": "u1", "allowed": True}
    finally:
        await runner.cleanup()

    # `helm upgrade` leaves the caBundle the chart does not render (three-way merge).
    done = helm("upgrade", RELEASE, str(CHART), "-n", NAMESPACE, kubeconfig=installed.kubeconfig)
    assert done.returncode == 0, done.stderr
    (hook,) = get(installed, "validatingwebhookconfiguration", name)["webhooks"]
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == material.ca
    # ... and the certificate the planner wrote into the Secret the chart renders empty.
    stored = get(installed, "secret", f"{name}-webhook-tls", "-n", NAMESPACE)["data"]
    assert base64.b64decode(stored["tls.crt"]) == material.cert

    def may(verb: str, what: str, namespace: str = NAMESPACE) -> bool:
        account = f"system:serviceaccount:{NAMESPACE}:{name}"
        args = ["auth", "can-i", verb, what, "-n", namespace, "--as", account]
        return installed.kubectl(*args, check=False).stdout.strip() == "yes"

    assert may("update", f"secrets/{name}-webhook-tls")
    # No create: the chart renders the Secret, so the planner cannot mint a token Secret under
    # its own Secret's name and read it.
    assert not may("create", "secrets")
    assert not may("get", f"secrets/{RELEASE}-deployer-nats")
    assert not may("create", "secrets", "ml")
    assert may("patch", f"validatingwebhookconfigurations.admissionregistration.k8s.io/{name}")
    assert not may("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/other")


def test_uninstall_removes_what_it_created_but_the_crd(installed: LocalCluster) -> None:
    done = helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", kubeconfig=installed.kubeconfig)
    assert done.returncode == 0, done.stderr
    selector = f"app.kubernetes.io/instance={RELEASE}"
    for kind in (
        "deployments,serviceaccounts,secrets,services,networkpolicies,roles,rolebindings",
        "clusterroles,clusterrolebindings,validatingwebhookconfigurations",
    ):
        left = get(installed, kind, "-A", "-l", selector)
        assert left["items"] == [], left["items"]
    get(installed, "crd", "workspaces.kaito.sh")  # kept: deleting it would delete every Workspace
