"""The webhook's serving certificate: a renewed pair that failed to load once is loaded later."""

import errno
import os
import ssl
from pathlib import Path

import pytest

from kairyu_localenv import certs
from kairyu_planner import webhook


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_renewed_pair_that_failed_to_load_is_retried_without_another_file_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for sub in ("ca", "a", "b"):
        (tmp_path / sub).mkdir()
    ca = certs.make_ca(tmp_path / "ca")
    first = certs.issue(ca, tmp_path / "a", name="w", common_name="a", hosts=("localhost",))
    renewed = certs.issue(ca, tmp_path / "b", name="w", common_name="b", hosts=("localhost",))
    clock = Clock()
    serving = webhook.ServingCertificate(first.cert, first.key, clock=clock)
    old = serving.current()
    real_load = serving._load
    loads: list[str] = []

    def flaky_load() -> ssl.SSLContext:
        loads.append("try")
        if len(loads) == 1:  # the first read after the renewal fails (say, out of descriptors)
            raise OSError(errno.EMFILE, "Too many open files")
        return real_load()

    monkeypatch.setattr(serving, "_load", flaky_load)
    os.replace(renewed.key, first.key)
    os.replace(renewed.cert, first.cert)
    assert serving.current() is old  # the failed load keeps the old certificate
    clock.now += 0.5
    assert serving.current() is old  # not retried on every handshake
    assert len(loads) == 1
    clock.now += 0.6
    new = serving.current()  # the files did not change again, and still the new pair loads
    assert new is not old
    assert len(loads) == 2
    clock.now += 5
    assert serving.current() is new  # loaded once: no more reads while the files stay
    assert len(loads) == 2
