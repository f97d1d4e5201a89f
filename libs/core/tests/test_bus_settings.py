"""Bus settings (NATS or Service Bus) and what the bus shows of them: no secret in a log."""

import pytest
from pydantic import ValidationError

from kairyu_core.bus import BusError, redact, setup
from kairyu_core.bus.connecting import bus_service, connect_bus
from kairyu_core.settings import ServiceSettings


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
    with pytest.raises(BusError, match="kairyu-planner"):
        bus_service("my-tool")


def test_the_nats_set_up_step_refuses_to_run_on_service_bus(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAIRYU_BUS", "servicebus")
    monkeypatch.setenv("KAIRYU_SERVICEBUS__FULLY_QUALIFIED_NAMESPACE", "ns.servicebus.windows.net")
    monkeypatch.setenv("KAIRYU_LOG__FORMAT", "text")
    assert setup.main([]) == 2
    assert "Service Bus entities come from the template" in capfd.readouterr().err
