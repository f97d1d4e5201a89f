"""A service started on a bus its settings cannot reach says why and stops, instead of waiting.

An unreachable bus is waited out (not ready meanwhile); a setting that cannot work is not, since a
restarted container would find the same setting: the service exits 2 with the reason, and no
secret in it. Run as the real service process, as the chart starts it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAIRYU_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, "-m", "kairyu_deployer"],
        env={**clean, "KAIRYU_LOG__FORMAT": "text", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_malformed_service_bus_connection_string_stops_the_service_naming_it() -> None:
    done = start(
        {
            "KAIRYU_BUS": "servicebus",
            "KAIRYU_SERVICEBUS__CONNECTION_STRING": "Endpoint=nope;SharedAccessKey=hunter2",
        }
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "bad Service Bus connection string" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def test_service_bus_without_its_settings_stops_the_service_naming_them() -> None:
    done = start({"KAIRYU_BUS": "servicebus"})
    assert done.returncode != 0
    assert "KAIRYU_SERVICEBUS__CONNECTION_STRING" in done.stderr
