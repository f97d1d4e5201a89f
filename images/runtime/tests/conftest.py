"""Session fixtures: the tiny model, its adapter, and three running runtime servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny import (
    ADAPTER,
    GUARDED_ENV,
    Server,
    build_adapter,
    build_model,
    start_server,
    stop,
    wait_healthy,
)


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
) -> Iterator[tuple[Server, Server, Server]]:
    """The base model, the model with the adapter at strength 1, and the base model behind an
    API key with small limits (started in parallel)."""
    logs = tmp_path_factory.mktemp("logs")
    empty = tmp_path_factory.mktemp("no-adapters")
    base = start_server(model_dir, empty, logs / "base.log")
    tuned = start_server(model_dir, adapters_dir, logs / "tuned.log", {ADAPTER: "1.0"})
    guarded = start_server(model_dir, empty, logs / "guarded.log", GUARDED_ENV)
    started = (base, tuned, guarded)
    try:
        for server in started:
            wait_healthy(server)
        yield started
    finally:
        for server in started:
            stop(server)


@pytest.fixture(scope="session")
def server(servers: tuple[Server, Server, Server]) -> Server:
    return servers[0]


@pytest.fixture(scope="session")
def tuned(servers: tuple[Server, Server, Server]) -> Server:
    return servers[1]


@pytest.fixture(scope="session")
def guarded(servers: tuple[Server, Server, Server]) -> Server:
    return servers[2]
