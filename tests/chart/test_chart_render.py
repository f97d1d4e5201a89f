"""The chart without a cluster: lint, golden renders, CRD drift, values schema, least privilege."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from helm import CHART, documents, helm, render, stable, values_files

from kairyu_activator.settings import ActivatorSettings
from kairyu_contracts.api.crd import CRDS
from kairyu_contracts.subjects import Subjects
from kairyu_core import metrics, tracing
from kairyu_core.bus import StreamSpec, topology
from kairyu_deployer.settings import DeployerSettings
from kairyu_localenv.binaries import repo_root
from kairyu_planner.settings import PlannerSettings
from kairyu_provisioner.settings import ProvisionerSettings
from kairyu_tuner.settings import TunerSettings
from kairyu_watcher.settings import WatcherSettings

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("KAIRYU_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("values", values_files(), ids=lambda p: p.name)
def test_lint_passes(values: Path) -> None:
    done = helm("lint", str(CHART), "-f", str(values), "--strict", "--kube-version", "1.36.3")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", values_files(), ids=lambda p: p.name)
def test_render_matches_its_golden_file(values: Path) -> None:
    golden = GOLDEN / values.name.replace("-values", "")
    # The CRD is left out: it is generated, and test_chart_crd_is_the_generated_one checks it.
    rendered = stable(render(values, "--set", "crds.enabled=false"))
    if UPDATE or not golden.exists():
        golden.write_text(rendered)
    assert rendered == golden.read_text(), f"run `make snapshots` if {golden.name} should change"


def test_chart_crds_are_the_generated_ones() -> None:
    for plural in CRDS:
        generated = (repo_root() / f"config/crd/kaito.sh_{plural}.yaml").read_text()
        copy = (CHART / f"charts/crds/files/kaito.sh_{plural}.yaml").read_text()
        assert copy == generated, "run `make crds`: the chart's CRD differs from the models"


def test_the_crds_are_kept_on_uninstall() -> None:
    crds = [d for d in documents(render()) if d["kind"] == "CustomResourceDefinition"]
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "inferencesets.kaito.sh",
        "multiroleinferences.kaito.sh",
        "workspaces.kaito.sh",
    ]
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_bad_values_are_refused_with_the_field() -> None:
    done = helm(
        "template", "x", str(CHART), "--kube-version", "1.36.3", "--set", "provisioner.backend=aws"
    )
    assert done.returncode != 0
    assert "/provisioner/backend" in done.stderr
    azure = helm(
        "template",
        "x",
        str(CHART),
        "--kube-version",
        "1.36.3",
        "--set",
        "provisioner.backend=azure",
    )
    assert "provisioner.azure.subscriptionId is required" in azure.stderr
    two_workers = helm(
        "template",
        "x",
        str(CHART),
        "--kube-version",
        "1.36.3",
        "--set",
        "watcher.replicas=2",
        "--set",
        "watcher.leaderElection.enabled=false",
    )
    assert two_workers.returncode != 0
    assert "watcher.replicas > 1 needs watcher.leaderElection.enabled" in two_workers.stderr
    half_byo = helm(
        "template", "x", str(CHART), "--kube-version", "1.36.3", "--set", "provisioner.backend=byo"
    )
    assert half_byo.returncode != 0
    assert "provisioner.backend byo needs global.nodeProvisioner: byo" in half_byo.stderr


def test_byo_reaches_the_provisioner_and_the_planner() -> None:
    env: dict[tuple[str, str], str | None] = {}
    for doc in documents(render(CHART / "ci/byo-values.yaml")):
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                for var in container.get("env") or []:
                    env[(doc["metadata"]["name"], var["name"])] = var.get("value")
    assert env[("kairyu-provisioner", "KAIRYU_BACKEND")] == "byo"
    assert env[("kairyu-planner", "KAIRYU_PLANNING__NODE_PROVISIONER")] == "byo"


def test_every_pod_is_restricted_and_nobody_may_read_secrets() -> None:
    for values in values_files():
        for doc in documents(render(values)):
            if doc["kind"] == "Deployment":
                pod = doc["spec"]["template"]["spec"]
                assert pod["securityContext"]["runAsNonRoot"] is True
                assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
                for container in pod["containers"]:
                    context = container["securityContext"]
                    assert context["allowPrivilegeEscalation"] is False
                    assert context["readOnlyRootFilesystem"] is True
                    assert context["capabilities"] == {"drop": ["ALL"]}
            if doc["kind"] in ("ClusterRole", "Role"):
                for rule in doc["rules"]:
                    if "secrets" in rule["resources"]:
                        # The planner's own webhook certificate only (default mode, docs/chart.md):
                        # creating one (RBAC cannot name it), reading and renewing that one.
                        assert doc["metadata"]["name"] == "kairyu-planner-webhook-tls"
                        assert rule["verbs"] == ["create"] or rule["resourceNames"] == [
                            "kairyu-planner-webhook-tls"
                        ]
                    assert "*" not in rule["verbs"]
                    assert "*" not in rule["resources"]


SERVICES = ("watcher", "planner", "provisioner", "deployer", "tuner", "activator")


def test_the_chart_runs_every_service_of_the_topology() -> None:
    """One Deployment per service that kairyu_core.bus.topology declares, and each can be
    switched off with `<service>.enabled`, its NATS user with it."""
    assert set(SERVICES) == set(topology.SERVICES)
    deployments = {d["metadata"]["name"] for d in documents(render()) if d["kind"] == "Deployment"}
    assert deployments == {f"kairyu-{service}" for service in SERVICES}
    docs = documents(render(None, "--set", "activator.enabled=false"))
    assert not [d for d in docs if d["metadata"]["name"].startswith("kairyu-activator")]
    assert "activator" not in authorization_users("--set", "activator.enabled=false")


def test_with_a_watch_namespace_only_node_rights_are_cluster_wide() -> None:
    docs = documents(render(None, "--set", "global.watchNamespace=ml"))
    cluster_wide = {
        resource
        for d in docs
        if d["kind"] == "ClusterRole"
        for rule in d["rules"]
        for resource in rule["resources"]
    }
    # and the planner's own webhook configuration, by name (its caBundle; docs/chart.md)
    assert cluster_wide == {"nodes", "nodeclaims", "nodepools", "validatingwebhookconfigurations"}
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    for service in SERVICES:
        role = roles[f"kairyu-{service}"]
        assert role["metadata"]["namespace"] == "ml"
        if service != "activator":  # the activator reads the sets from NATS only
            assert {"workspaces"} <= {r for rule in role["rules"] for r in rule["resources"]}
    deployer = {r for rule in roles["kairyu-deployer"]["rules"] for r in rule["resources"]}
    assert {"deployments", "statefulsets", "services"} <= deployer
    activator = {r for rule in roles["kairyu-activator"]["rules"] for r in rule["resources"]}
    assert activator == {"services", "endpointslices"}
    planner = {r for rule in roles["kairyu-planner"]["rules"] for r in rule["resources"]}
    assert "scaledobjects" in planner
    bindings = {d["metadata"]["name"]: d for d in docs if d["kind"] == "RoleBinding"}
    for service in SERVICES:
        binding = bindings[f"kairyu-{service}"]
        assert binding["metadata"]["namespace"] == "ml"
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": f"kairyu-{service}",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": f"kairyu-{service}", "namespace": "kairyu-system"}
        ]
    cluster_bindings = {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"}
    assert cluster_bindings == {"kairyu-watcher", "kairyu-provisioner", "kairyu-planner-webhook-ca"}


@pytest.mark.parametrize("service", SERVICES)
def test_more_replicas_without_leader_election_are_refused(service: str) -> None:
    """Without a Lease, two replicas would reconcile the same Workspace at once."""
    done = helm(
        "template",
        "x",
        str(CHART),
        "--kube-version",
        "1.36.3",
        "--set",
        f"{service}.replicas=2",
        "--set",
        f"{service}.leaderElection.enabled=false",
    )
    assert done.returncode != 0
    assert f"{service}.replicas > 1 needs {service}.leaderElection.enabled" in done.stderr


def test_replicas_above_one_get_a_disruption_budget() -> None:
    docs = documents(render(None, "--set", "planner.replicas=3"))
    budgets = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert budgets == {"kairyu-planner"}


@pytest.mark.parametrize("service", SERVICES)
def test_standby_replicas_wait_on_their_services_lease_in_the_release_namespace(
    service: str,
) -> None:
    docs = documents(render(None, "--set", f"{service}.replicas=2"))
    name = f"kairyu-{service}"
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    assert deployment["spec"]["replicas"] == 2
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAIRYU_LEADER_ELECTION__ENABLED"]["value"] == "true"
    assert env["KAIRYU_LEADER_ELECTION__LEASE_NAME"]["value"] == f"kairyu-{service}"
    for name, field in (("IDENTITY", "metadata.name"), ("NAMESPACE", "metadata.namespace")):
        ref = env[f"KAIRYU_LEADER_ELECTION__{name}"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert ref == field
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    role = roles[f"kairyu-{service}-lease"]
    assert role["metadata"]["namespace"] == "kairyu-system"
    assert {r for rule in role["rules"] for r in rule["resources"]} == {"leases"}
    assert {f"kairyu-{service}"} == {
        name for rule in role["rules"] for name in rule.get("resourceNames", [])
    }
    bindings = {d["metadata"]["name"]: d for d in docs if d["kind"] == "RoleBinding"}
    assert bindings[f"kairyu-{service}-lease"]["subjects"] == [
        {"kind": "ServiceAccount", "name": f"kairyu-{service}", "namespace": "kairyu-system"}
    ]
    assert any(
        d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == f"kairyu-{service}"
        for d in docs
    )


SETTINGS = {
    "watcher": WatcherSettings,
    "planner": PlannerSettings,
    "provisioner": ProvisionerSettings,
    "deployer": DeployerSettings,
    "tuner": TunerSettings,
    "activator": ActivatorSettings,
}


EXPORTED = {"production-values.yaml": ["otlp"], "byo-values.yaml": ["zipkin"]}


@pytest.mark.parametrize("values", values_files(), ids=lambda p: p.name)
def test_each_pods_environment_is_valid_settings_for_its_service(
    values: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart's variable names and values are what the services' pydantic settings accept."""
    for doc in documents(render(values)):
        if doc["kind"] != "Deployment":
            continue
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        with monkeypatch.context() as env:
            for name in [n for n in os.environ if n.startswith(("KAIRYU_", "OTEL_"))]:
                env.delenv(name)
            for var in container["env"]:
                # Secret-backed values are read by the kubelet; any string stands in for them here.
                env.setenv(var["name"], var.get("value", "from-a-secret"))
            settings = SETTINGS[container["name"]]()
            # The exporters a service starts with: what the values ask for, nothing refused.
            exported = tracing.exporter_names(os.environ)
        assert exported == EXPORTED.get(values.name, []), values.name
        assert settings.health_port == 8080
        assert settings.nats.stream == "KAIRYU"
        # The transport the values chose is the one each service connects to.
        on_servicebus = values.name.startswith("servicebus")
        assert settings.bus == ("servicebus" if on_servicebus else "nats"), values.name
        assert (settings.servicebus is not None) == on_servicebus, values.name
        if isinstance(settings, ProvisionerSettings) and "azure" in values.name:
            assert settings.backend == "azure"
            assert settings.azure.cluster_name == "aks-kairyu"
        if isinstance(settings, TunerSettings):
            assert settings.job.tuning_image.endswith("/kairyu-tuning:0.1.0")
        if isinstance(settings, ActivatorSettings):
            # Not the settings' default 8080 for the load: that is the pod's health port.
            assert (settings.activator.load_port, settings.activator.port) == (8082, 8081)
            # status.podIP, from the downward API (test_activator_chart.py)
            assert settings.activator.address == "from-a-secret"
        if isinstance(settings, PlannerSettings):
            assert settings.autoscaling.activator_url == (
                "http://kairyu-activator.kairyu-system.svc:8080"
            )
        # Every service elects a leader by default: a rolling update runs two pods for a while.
        assert settings.leader_election.enabled


def test_the_dashboard_queries_metrics_the_services_export() -> None:
    (config_map,) = [
        d
        for d in documents(render())
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kairyu-dashboard"
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["kairyu.json"])
    exported = {
        metric.name
        for collector in (
            metrics.RECONCILES,
            metrics.RECONCILE_SECONDS,
            metrics.STATE_CHANGES,
            metrics.KUBE_REQUESTS,
            metrics.ROLLOUT_PHASE_SECONDS,
        )
        for metric in collector.collect()
    }
    queried = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(kairyu_[a-z_]+)", target.get("expr", ""))
    }
    assert queried
    assert queried <= exported, queried - exported


def authorization_users(*set_values: str) -> dict[str, list[str]]:
    """Each NATS user of the rendered authorization block: the subjects it may publish to."""
    (config_map,) = [
        d
        for d in documents(render(None, *set_values))
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("nats-authorization")
    ]
    conf = config_map["data"]["authorization.conf"]
    users: dict[str, list[str]] = {}
    for block in re.split(r"^\s+user: ", conf, flags=re.M)[1:]:
        name = json.loads(block.splitlines()[0]).removeprefix("kairyu-")
        allowed = block.split("publish:", 1)[1].split("subscribe:", 1)[0]
        users[name] = re.findall(r'"([^"]+)"', allowed)
    return users


def test_the_nats_authorization_grants_each_service_exactly_its_declared_topology() -> None:
    """The template names each identity's subjects by hand; this holds every user to
    kairyu_core.bus.topology (also with another stream and prefix): it may publish exactly the
    subjects it writes, create ordered consumers on exactly the kinds it reads, and use no
    JetStream API beyond the streams' INFO, the state consumers' INFO and flow control."""
    spec = StreamSpec(name="OTHER", subjects=Subjects(prefix="px"))
    users = authorization_users("--set", "global.nats.stream=OTHER,global.nats.subjectPrefix=px")
    create = "$JS.API.CONSUMER.CREATE.OTHER_STATE.*."
    assert set(users) == {"admin", *topology.SERVICES}
    assert sorted(users.pop("admin")) == sorted(
        f"$JS.API.STREAM.{op}.{stream}"
        for stream in spec.streams
        for op in ("CREATE", "UPDATE", "INFO")
    )
    infrastructure = {
        *(f"$JS.API.STREAM.INFO.{stream}" for stream in spec.streams),
        "$JS.API.CONSUMER.INFO.OTHER_STATE.*",
        "$JS.FC.OTHER_STATE.>",
    }
    for service, allowed in users.items():
        follows = [a.removeprefix(create) for a in allowed if a.startswith(create)]
        subjects = [a for a in allowed if not a.startswith("$")]
        rest = {a for a in allowed if a.startswith("$") and not a.startswith(create)}
        assert sorted(follows) == sorted(topology.reads(service, spec)), service
        assert sorted(subjects) == sorted(topology.publishes(service, spec)), service
        assert rest == infrastructure, service
