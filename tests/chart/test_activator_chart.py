"""The activator's subchart: where KEDA and cold sets' callers reach it, and what it may do."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from helm import CHART, NAMESPACE, RELEASE, documents, helm, render

NAME = f"{RELEASE}-activator"


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
    return dict(found)


def env(docs: list[dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in container(docs, name)["env"]}


def test_keda_reads_the_load_where_the_planner_says_and_cold_sets_reach_the_pod() -> None:
    docs = documents(render())
    url = urlsplit(env(docs, f"{RELEASE}-planner")["KAIRYU_AUTOSCALING__ACTIVATOR_URL"]["value"])
    service = one(docs, "Service", NAME)
    assert url.scheme == "http"
    assert url.hostname == f"{NAME}.{NAMESPACE}.svc"
    assert service["metadata"]["namespace"] == NAMESPACE
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert {name: p["port"] for name, p in ports.items()} == {"load": 8080, "http": 8081}
    assert url.port == ports["load"]["port"]
    # Each Service port lands on the container port its listener binds.
    deployment = one(docs, "Deployment", NAME)
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    declared = {p["name"]: p["containerPort"] for p in container(docs, NAME)["ports"]}
    variables = env(docs, NAME)
    for name, variable in (("load", "LOAD_PORT"), ("http", "PORT")):
        target = ports[name]["targetPort"]
        assert str(declared[target]) == variables[f"KAIRYU_ACTIVATOR__{variable}"]["value"]
    # Not on the health port, which every pod serves /healthz, /readyz and /metrics on.
    assert declared["health"] not in (declared["load"], declared["http"])
    # The sets' EndpointSlices name this pod's own address while they are cold.
    address = variables["KAIRYU_ACTIVATOR__ADDRESS"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert address == "status.podIP"
    # One replica that leads (its standbys would not listen), like every service on a Lease.
    assert deployment["spec"]["replicas"] == 1
    assert variables["KAIRYU_LEADER_ELECTION__ENABLED"]["value"] == "true"
    assert variables["KAIRYU_LOG__FORMAT"]["value"] == "json"


def test_the_planner_follows_the_release_and_an_activator_of_ones_own() -> None:
    done = helm("template", "ml", str(CHART), "-n", "other", "--kube-version", "1.36.3")
    assert done.returncode == 0, done.stderr
    docs = documents(done.stdout)
    url = env(docs, "ml-planner")["KAIRYU_AUTOSCALING__ACTIVATOR_URL"]["value"]
    assert url == "http://ml-activator.other.svc:8080"
    assert one(docs, "Service", "ml-activator")["metadata"]["namespace"] == "other"
    mine = "http://activator.elsewhere.svc:9000"
    docs = documents(render(None, "--set", f"planner.autoscaling.activatorUrl={mine}"))
    assert env(docs, f"{RELEASE}-planner")["KAIRYU_AUTOSCALING__ACTIVATOR_URL"]["value"] == mine


def test_keda_and_every_namespace_may_reach_the_listeners() -> None:
    docs = documents(render())
    policy = one(docs, "NetworkPolicy", NAME)
    declared = {p["name"]: p["containerPort"] for p in container(docs, NAME)["ports"]}
    # A rule without `from` admits every pod of every namespace: KEDA's operator (usually in
    # `keda`) on the load port, the callers of a cold set on the data port.
    open_ports = {
        port["port"]
        for rule in policy["spec"]["ingress"]
        if "from" not in rule
        for port in rule["ports"]
    }
    assert {declared["load"], declared["http"]} <= open_ports
    # It reads the ready inference pods' /metrics on the deployer's port.
    egress = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
    assert 5000 in egress


def _rules(docs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return list(one(docs, "ClusterRole", name)["rules"])


def test_the_activator_may_route_sets_and_the_planner_may_scale_them() -> None:
    docs = documents(render())
    assert _rules(docs, NAME) == [
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create", "patch"]},
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "create", "patch", "delete"],
        },
    ]
    binding = one(docs, "ClusterRoleBinding", NAME)
    assert binding["roleRef"]["name"] == NAME
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    assert {
        "apiGroups": ["keda.sh"],
        "resources": ["scaledobjects"],
        "verbs": ["get", "create", "patch", "delete"],
    } in _rules(docs, f"{RELEASE}-planner")


def test_a_listener_on_the_health_port_is_refused() -> None:
    for value in ("8081", "8082"):
        done = helm(
            "template", "x", str(CHART), "--kube-version", "1.36.3",
            "--set", f"global.healthPort={value}",
        )  # fmt: skip
        assert done.returncode != 0
        assert "is global.healthPort; give it another" in done.stderr
