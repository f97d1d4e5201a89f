"""Where the control-plane binaries are: built by tools/cluster/build.sh into a versioned cache."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

BUILD_SCRIPT = Path("tools/cluster/build.sh")
BIN_DIR_ENV = "KAIRYU_CLUSTER_BIN"


@dataclass(frozen=True)
class Binaries:
    """Paths of the pinned control-plane binaries."""

    directory: Path

    def _path(self, name: str) -> Path:
        path = self.directory / name
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"{path} is missing; run {BUILD_SCRIPT}")
        return path

    @property
    def etcd(self) -> Path:
        return self._path("etcd")

    @property
    def kube_apiserver(self) -> Path:
        return self._path("kube-apiserver")

    @property
    def kube_controller_manager(self) -> Path:
        return self._path("kube-controller-manager")

    @property
    def kube_scheduler(self) -> Path:
        return self._path("kube-scheduler")

    @property
    def kubectl(self) -> Path:
        return self._path("kubectl")

    @property
    def kwok(self) -> Path:
        return self._path("kwok")

    @classmethod
    def locate(cls) -> Binaries:
        """$KAIRYU_CLUSTER_BIN if set, else what build.sh reports (it builds on a cold cache)."""
        if env := os.environ.get(BIN_DIR_ENV):
            return cls(Path(env))
        return cls(run_build(BUILD_SCRIPT))


def run_build(script: Path) -> Path:
    """Run a tools/ build script (it builds only on a cold cache); its last line is the result.

    Its stderr, where it says what it builds and how far it is, goes to the user's terminal.
    """
    out = subprocess.run(
        ["bash", str(repo_root() / script)], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def repo_root() -> Path:
    """The kairyu checkout: this dev-only package is always installed from it, editable.

    The local environment needs the checkout itself (the tools/ build scripts, the examples, the
    CRDs), which is why it is no product package: no image installs it.
    """
    root = Path(__file__).resolve().parents[3]  # devenv/src/kairyu_localenv/binaries.py
    if not (root / BUILD_SCRIPT).is_file():
        raise FileNotFoundError(
            f"kairyu_localenv is not running from a kairyu checkout ({root} has no {BUILD_SCRIPT});"
            " install it with `make sync` from the checkout"
        )
    return root
