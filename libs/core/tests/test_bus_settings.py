"""Bus settings (NATS or Service Bus) and what the bus shows of them: no secret in a log."""

from pathlib import Path

import pytest
from azure.servicebus.exceptions import ServiceBusAuthorizationError
from pydantic import ValidationError

from kairyu_core.bus import BusError, BusSettingsError, redact, setup
from kairyu_core.bus.connecting import bus_service, connect_bus
from kairyu_core.bus.servicebus import ServiceBusBus
from kairyu_core.settings import ServiceBusSettings, ServiceSettings


def test_credentials_in_the_url_are_refused_with_where_they_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAIRYU_NATS__URL", "nats://kairyu-planner:hunter2@nats:4222")
    with pytest.raises(ValidationError, match="user and password") as refused:
        ServiceSettings()
    assert "hunter2" not in str(refused.value)


def test_the_password_is_a_secret_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIRYU_NATS__URL", "tls://nats.messaging:4222")
    monkeypatch.setenv("KAIRYU_NATS__USER", "kairyu-planner")
    monkeypatch.setenv("KAIRYU_NATS__PASSWORD", "hunter2")
    settings = ServiceSettings()
    assert settings.nats.password is not None
    assert settings.nats.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in settings.model_dump_json()


def test_a_password_without_a_user_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIRYU_NATS__PASSWORD", "hunter2")
    with pytest.raises(ValidationError, match="go together"):
        ServiceSettings()


def test_urls_are_redacted_wherever_they_appear() -> None:
    line = (
        "cannot connect to nats://kairyu-tuner:hunter2@nats:4222 "
        "or fetch https://blob.example/model.bin?sig=abc&se=2030 (tls://a:b@c:1)"
    )
    shown = redact(line)
    assert "hunter2" not in shown
    assert "sig=abc" not in shown
    assert "a:b@" not in shown
    assert "nats://***@nats:4222" in shown
    assert "https://blob.example/model.bin?***" in shown


def test_a_password_containing_at_signs_is_redacted_whole() -> None:
    shown = redact("disconnected from nats://kairyu-tuner:p@ss@w0rd@nats:4222 (retrying)")
    assert shown == "disconnected from nats://***@nats:4222 (retrying)"


def test_the_settings_of_an_older_chart_are_refused_not_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The event stream's limits and the per-service topology switch are gone: a leftover
    variable is an error that names it, not a limit silently not applied."""
    monkeypatch.setenv("KAIRYU_NATS__MANAGE_TOPOLOGY", "false")
    with pytest.raises(ValidationError, match="manage_topology"):
        ServiceSettings()


def test_service_bus_without_a_namespace_is_refused_naming_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAIRYU_BUS", "servicebus")
    with pytest.raises(ValidationError, match="KAIRYU_SERVICEBUS__CONNECTION_STRING"):
        ServiceSettings()


def test_an_unknown_transport_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIRYU_BUS", "kafka")
    with pytest.raises(ValidationError, match="nats"):
        ServiceSettings()


def test_the_service_bus_connection_string_is_a_secret_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAIRYU_BUS", "servicebus")
    monkeypatch.setenv(
        "KAIRYU_SERVICEBUS__CONNECTION_STRING",
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=hunter2",
    )
    settings = ServiceSettings()
    assert settings.bus == "servicebus"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in settings.model_dump_json()


async def test_the_settings_choose_the_transport_the_service_gets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAIRYU_BUS", "servicebus")
    monkeypatch.setenv("KAIRYU_SERVICEBUS__FULLY_QUALIFIED_NAMESPACE", "ns.servicebus.windows.net")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # a developer's shell
    bus = await connect_bus(ServiceSettings(service_name="kairyu-deployer"))
    try:
        # Nothing is opened before first use, so this needs no namespace: the bus is Service
        # Bus's, as the deployer (its subscriptions are the deployer's).
        assert bus.serves_snapshots
        assert await bus.state_stream_identity() == "servicebus"
    finally:
        await bus.close()


def test_only_kairyu_services_have_entities_on_service_bus() -> None:
    assert bus_service("kairyu-deployer") == "deployer"
    assert bus_service("kairyu-watcher") == "watcher"
    with pytest.raises(BusSettingsError, match="kairyu-planner"):
        bus_service("my-tool")


def test_the_nats_set_up_step_refuses_to_run_on_service_bus(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAIRYU_BUS", "servicebus")  # without its group: refused all the same
    with pytest.raises(SystemExit) as exited:
        setup.main([])
    assert exited.value.code == 2
    assert "Service Bus entities come from the template" in capsys.readouterr().err


async def test_in_a_pod_without_workload_identity_service_bus_refuses_to_sign_in_as_the_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Azure's default chain would fall back to the node's identity: another principal."""
    monkeypatch.delenv("AZURE_FEDERATED_TOKEN_FILE", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    settings = ServiceBusSettings(fully_qualified_namespace="ns.servicebus.windows.net")
    with pytest.raises(BusSettingsError, match=r"azure\.workload\.identity/use"):
        await ServiceBusBus.connect(settings, service="deployer")


async def test_in_a_pod_with_workload_identity_service_bus_signs_in_with_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("a-federated-token")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token))
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000001")
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000002")
    settings = ServiceBusSettings(fully_qualified_namespace="ns.servicebus.windows.net")
    async with await ServiceBusBus.connect(settings, service="deployer") as bus:
        assert bus.waits_for_roles  # a refusal at start is a role not in effect yet: waited out
        assert type(bus._owned_credential).__name__ == "WorkloadIdentityCredential"


@pytest.mark.parametrize("entra", [True, False], ids=["entra-id", "shared-key"])
async def test_a_refusal_at_start_is_waited_out_only_when_signed_in_with_entra_id(
    entra: bool,
) -> None:
    """A role takes minutes to reach Service Bus after the template assigns it; a key does not."""
    connection = "Endpoint=sb://127.0.0.1:1/;SharedAccessKeyName=k;SharedAccessKey=s"
    async with await ServiceBusBus.connect(connection, service="deployer") as bus:
        bus.waits_for_roles = entra
        with pytest.raises(BusError) as refused:
            async with bus._guard("kairyu-state-pod"):
                raise ServiceBusAuthorizationError(message="Unauthorized access")
    assert refused.value.__class__.__name__ == (
        "_EntitiesMissingError" if entra else "BusError"
    )  # the one wait_for_streams waits on, or the one it raises
    assert "kairyu-state-pod" in str(refused.value) or not entra
