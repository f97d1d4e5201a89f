"""The chart on Azure Service Bus (`global.bus: servicebus`): nothing of NATS, the right settings.

With Service Bus the entities come from the ARM template (files/servicebus-entities.json), so no
nats-setup sidecar runs and no NATS setting, Secret or authorization block is rendered. Each
service gets `KAIRYU_BUS` and `KAIRYU_SERVICEBUS__*`: the namespace and its own workload identity
(ServiceAccount annotation, pod label), or the connection string from the user's Secret.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm import CHART, documents, helm, render

from kairyu_core.bus import topology
from kairyu_core.settings import ServiceBusSettings

WORKLOAD_IDENTITY = CHART / "ci/servicebus-workload-identity-values.yaml"
CONNECTION_STRING = CHART / "ci/servicebus-connection-string-values.yaml"
CLIENT_IDS = yaml.safe_load(WORKLOAD_IDENTITY.read_text())["global"]["servicebus"][
    "workloadIdentity"
]["clientIds"]
WI_LABEL = "azure.workload.identity/use"
WI_ANNOTATION = "azure.workload.identity/client-id"


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}


def env_of(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def refused(*set_values: str, values: Path | None = None) -> str:
    """The render's error output; it must fail."""
    args = ["template", "x", str(CHART), "--kube-version", "1.36.3"]
    if values is not None:
        args += ["-f", str(values)]
    for value in set_values:
        args += ["--set", value]
    done = helm(*args)
    assert done.returncode != 0, "the render should have been refused"
    return done.stderr


@pytest.mark.parametrize("values", [WORKLOAD_IDENTITY, CONNECTION_STRING], ids=lambda p: p.name)
def test_on_service_bus_nothing_of_nats_is_rendered(values: Path) -> None:
    docs = documents(render(values))
    found = deployments(docs)
    assert set(found) == {f"kairyu-{service}" for service in topology.SERVICES}
    for name, deployment in found.items():
        pod = deployment["spec"]["template"]["spec"]
        assert "initContainers" not in pod, name  # the nats-setup sidecar
        assert [c["name"] for c in pod["containers"]] == [name.removeprefix("kairyu-")]
        env = env_of(deployment)
        assert not [n for n in env if n.startswith("KAIRYU_NATS__")], name
        assert env["KAIRYU_BUS"]["value"] == "servicebus"
        assert env["KAIRYU_SERVICEBUS__STREAM"]["value"] == "KAIRYU"
        assert "nats-tls" not in {v["name"] for v in pod["volumes"]}
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert not [n for n in names if "nats" in n[1]], names  # Secrets, authorization ConfigMap
    # Nothing else in the release reads Secrets or needs NATS: the whole render says so.
    assert "nats" not in render(values, "--set", "crds.enabled=false").lower()


def test_with_workload_identity_each_service_signs_in_as_its_own_identity() -> None:
    docs = documents(render(WORKLOAD_IDENTITY))
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    for name, deployment in deployments(docs).items():
        service = name.removeprefix("kairyu-")
        env = env_of(deployment)
        assert env["KAIRYU_SERVICEBUS__FULLY_QUALIFIED_NAMESPACE"]["value"] == (
            "kairyu-sb.servicebus.windows.net"
        )
        assert "KAIRYU_SERVICEBUS__CONNECTION_STRING" not in env
        template = deployment["spec"]["template"]
        assert template["metadata"]["labels"][WI_LABEL] == "true"
        assert template["spec"]["serviceAccountName"] == name
        annotations = accounts[name]["metadata"]["annotations"]
        assert annotations == {WI_ANNOTATION: CLIENT_IDS[service]}
        # The label is on the pods only: the Deployment's selector is unchanged.
        assert WI_LABEL not in deployment["spec"]["selector"]["matchLabels"]


def test_with_a_connection_string_the_kubelet_reads_it_from_the_users_secret() -> None:
    docs = documents(render(CONNECTION_STRING))
    for name, deployment in deployments(docs).items():
        env = env_of(deployment)
        assert env["KAIRYU_SERVICEBUS__CONNECTION_STRING"] == {
            "name": "KAIRYU_SERVICEBUS__CONNECTION_STRING",
            "valueFrom": {
                "secretKeyRef": {"name": "kairyu-servicebus", "key": "connection-string"}
            },
        }, name
        assert "KAIRYU_SERVICEBUS__FULLY_QUALIFIED_NAMESPACE" not in env
        assert WI_LABEL not in deployment["spec"]["template"]["metadata"]["labels"]
    assert not [d for d in docs if d["kind"] == "Secret" and "servicebus" in d["metadata"]["name"]]
    for account in (d for d in docs if d["kind"] == "ServiceAccount"):
        assert WI_ANNOTATION not in (account["metadata"].get("annotations") or {})


@pytest.mark.parametrize("values", [WORKLOAD_IDENTITY, CONNECTION_STRING], ids=lambda p: p.name)
def test_the_settings_variables_are_the_service_bus_settings(values: Path) -> None:
    """What the chart sets is one valid `ServiceBusSettings`: the names, and one way in."""
    for name, deployment in deployments(documents(render(values))).items():
        env = env_of(deployment)
        fields = {
            key.removeprefix("KAIRYU_SERVICEBUS__").lower(): var.get("value", "from-a-secret")
            for key, var in env.items()
            if key.startswith("KAIRYU_SERVICEBUS__")
        }
        settings = ServiceBusSettings.model_validate(fields)
        assert settings.stream == "KAIRYU", name
        assert (settings.connection_string is None) == (values == WORKLOAD_IDENTITY), name


def test_service_bus_egress_is_open_and_nats_stays_as_it_was() -> None:
    def egress(docs: list[dict[str, Any]]) -> set[int]:
        (policy,) = [
            d
            for d in docs
            if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "kairyu-watcher"
        ]
        return {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}

    assert 5671 in egress(documents(render(CONNECTION_STRING)))  # AMQP over TLS
    assert 5671 not in egress(documents(render()))


def test_the_provisioners_own_client_id_annotation_serves_for_service_bus_too() -> None:
    """The azure backend annotates the provisioner's ServiceAccount already; one identity."""
    done = render(
        WORKLOAD_IDENTITY,
        "-f",
        str(CHART / "ci/azure-workload-identity-values.yaml"),
        "--set",
        "global.servicebus.workloadIdentity.clientIds.provisioner=",
    )
    (account,) = [
        d
        for d in documents(done)
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "kairyu-provisioner"
    ]
    assert account["metadata"]["annotations"] == {
        WI_ANNOTATION: "11111111-1111-1111-1111-111111111111"
    }


def test_bad_service_bus_values_are_refused_with_the_field() -> None:
    bus = "global.bus=servicebus"
    assert "/global/bus" in refused("global.bus=kafka")
    assert "/global/servicebus/fullyQualifiedNamespace" in refused(bus)
    assert "/global/servicebus/auth" in refused(
        bus, "global.servicebus.auth=sharedKey", "global.servicebus.fullyQualifiedNamespace=a.b"
    )
    assert "/global/servicebus/connectionStringSecret/name" in refused(
        bus, "global.servicebus.auth=connectionString"
    )
    # A host name only: no scheme, no port, never a connection string.
    assert "/global/servicebus/fullyQualifiedNamespace" in refused(
        bus, "global.servicebus.fullyQualifiedNamespace=sb://kairyu-sb.servicebus.windows.net"
    )
    assert "/global/servicebus/workloadIdentity/clientIds/planner" in refused(
        "global.servicebus.workloadIdentity.clientIds.planner=not-a-client-id"
    )


def test_a_service_without_a_workload_identity_is_refused() -> None:
    stderr = refused(
        "global.servicebus.workloadIdentity.clientIds.tuner=", values=WORKLOAD_IDENTITY
    )
    assert "global.servicebus.workloadIdentity.clientIds.tuner is required" in stderr
    # ... unless the service is off.
    render(
        WORKLOAD_IDENTITY,
        "--set",
        "global.servicebus.workloadIdentity.clientIds.tuner=,tuner.enabled=false",
    )


def test_two_client_ids_for_one_service_account_are_refused() -> None:
    stderr = refused(
        "provisioner.serviceAccount.annotations.azure\\.workload\\.identity/client-id="
        "22222222-2222-2222-2222-222222222222",
        values=WORKLOAD_IDENTITY,
    )
    assert "a ServiceAccount has one workload identity" in stderr
    assert "global.servicebus.workloadIdentity.clientIds.provisioner" in stderr


def test_the_default_is_nats() -> None:
    for deployment in deployments(documents(render())).values():
        env = env_of(deployment)
        assert "KAIRYU_BUS" not in env  # the services' default
        assert "KAIRYU_NATS__URL" in env
        assert [c["name"] for c in deployment["spec"]["template"]["spec"]["initContainers"]] == [
            "nats-setup"
        ]


def test_the_entities_template_ships_in_the_chart() -> None:
    shipped = CHART / "files/servicebus-entities.json"
    assert shipped.is_file()  # tests/contract/test_servicebus_entities_template.py: its content
    assert os.path.getsize(shipped) < 512 * 1024  # each release stores its chart's files
