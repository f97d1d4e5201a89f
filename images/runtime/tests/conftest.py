"""Session fixtures: the tiny model, its adapter, and two running runtime servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny import ADAPTER, Server, build_adapter, build_model, start_server, stop, wait_healthy


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    build_model(directory)
    return directory


@pytest.fixture(scope="session")
def adapters_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    directory = tmp_path_factory.mktemp("adapters")
    build_adapter(model_dir, directory / ADAPTER)
    return directory


@pytest.fixture(scope="session")
def servers(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, adapters_dir: Path
) -> Iterator[tuple[Server, Server]]:
    """The base model, and the same model with the adapter at strength 1 (started in parallel)."""
    logs = tmp_path_factory.mktemp("logs")
    empty = tmp_path_factory.mktemp("no-adapters")
    base = start_server(model_dir, empty, logs / "base.log")
    tuned = start_server(model_dir, adapters_dir, logs / "tuned.log", {ADAPTER: "1.0"})
    try:
        wait_healthy(base)
        wait_healthy(tuned)
        yield base, tuned
    finally:
        stop(base)
        stop(tuned)


@pytest.fixture(scope="session")
def server(servers: tuple[Server, Server]) -> Server:
    return servers[0]


@pytest.fixture(scope="session")
def tuned(servers: tuple[Server, Server]) -> Server:
    return servers[1]
