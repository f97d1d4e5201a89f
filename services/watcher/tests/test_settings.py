"""The watcher's leader-election settings: a timing that could make two leaders is refused."""

import pytest
from pydantic import ValidationError

from kairyu_core.kube.leadership import lease_of
from kairyu_watcher.settings import WatcherSettings


def test_a_renew_deadline_past_the_lease_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAIRYU_LEADER_ELECTION__ENABLED", "true")
    monkeypatch.setenv("KAIRYU_LEADER_ELECTION__RENEW_DEADLINE_S", "20")
    with pytest.raises(ValidationError, match="retry_s < renew_deadline_s < duration_s"):
        WatcherSettings()


def test_the_lease_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIRYU_LEADER_ELECTION__NAMESPACE", "kairyu-system")
    monkeypatch.setenv("KAIRYU_LEADER_ELECTION__IDENTITY", "kairyu-watcher-7d9f")
    settings = WatcherSettings()
    lease = lease_of(settings.leader_election, service=settings.service_name)
    assert (lease.namespace, lease.identity, lease.name) == (
        "kairyu-system",
        "kairyu-watcher-7d9f",
        "kairyu-watcher",
    )
