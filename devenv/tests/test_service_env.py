"""env_of: the variables `make dev` sets are the ones the services' settings read."""

from __future__ import annotations

from pathlib import Path

import pytest

from kairyu_activator.settings import ActivatorSettings
from kairyu_localenv.service_env import env_of
from kairyu_planner.settings import PlannerSettings
from kairyu_provisioner.settings import ProvisionerSettings


def test_a_service_reads_back_what_the_environment_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(
        PlannerSettings,
        planning={"node_provisioner": "byo"},
        webhook={"port": 9444, "cert_file": Path("/certs/tls.crt")},
        log={"format": "text"},
    )
    assert env["KAIRYU_PLANNING__NODE_PROVISIONER"] == "byo"
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    settings = PlannerSettings()

    assert settings.planning.node_provisioner == "byo"
    assert settings.webhook.port == 9444
    assert settings.webhook.cert_file == Path("/certs/tls.crt")
    assert settings.log.format == "text"


def test_top_level_and_optional_nested_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(ProvisionerSettings, backend="byo", azure={"endpoint": "http://127.0.0.1:1"})
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    settings = ProvisionerSettings()

    assert settings.backend == "byo"
    assert settings.azure.endpoint == "http://127.0.0.1:1"


def test_a_setting_the_service_does_not_have_is_refused_at_once() -> None:
    with pytest.raises(KeyError, match=r"ActivatorSettings\.activator\.laod_port: no such"):
        env_of(ActivatorSettings, activator={"laod_port": 8080})
    with pytest.raises(TypeError, match="not a nested model"):
        env_of(ActivatorSettings, service_name={"x": 1})
