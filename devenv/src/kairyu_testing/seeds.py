"""The seed's Workspace manifests (tests/manifests), which tests must use as they are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kairyu_localenv.binaries import repo_root


def seed_path(name: str) -> Path:
    """tests/manifests/seed-<name>.yaml: name is inference, tuning or adapter."""
    return repo_root() / "tests/manifests" / f"seed-{name}.yaml"


def seed(name: str) -> dict[str, Any]:
    """A fresh copy of a seed manifest, free to modify."""
    doc: dict[str, Any] = yaml.safe_load(seed_path(name).read_text())
    return doc
