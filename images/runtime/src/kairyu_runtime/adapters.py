"""Which LoRA adapters to load, and with what strength.

KAITO mounts each adapter at /mnt/adapter/<name> and passes its strength as the environment variable
<name>=<strength>. A directory without adapter_config.json is not an adapter (the puller may still
be copying it, or it is unrelated), so it is skipped rather than failing the whole server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"


class AdapterError(ValueError):
    """An adapter that cannot be used as configured."""


@dataclass(frozen=True)
class Adapter:
    name: str
    path: Path
    strength: float


def strength_of(name: str, env: Mapping[str, str]) -> float:
    raw = env.get(name, "1.0")
    try:
        value = float(raw)
    except ValueError:
        raise AdapterError(f"adapter {name}: strength {raw!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise AdapterError(f"adapter {name}: strength {raw!r} must be a finite number >= 0")
    return value


def discover(directory: Path, env: Mapping[str, str]) -> list[Adapter]:
    """The adapters under `directory`, sorted by name so the combination is reproducible."""
    if not directory.is_dir():
        return []
    return [
        Adapter(name=child.name, path=child, strength=strength_of(child.name, env))
        for child in sorted(directory.iterdir())
        if (child / ADAPTER_CONFIG).is_file()
    ]
