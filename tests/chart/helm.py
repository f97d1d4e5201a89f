"""helm for the chart tests: the pinned binary (tools/helm/build.sh) and rendering helpers."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from kairyu_localenv.binaries import repo_root, run_build

CHART = repo_root() / "charts/kairyu"
KUBE_VERSION = "1.36.3"
RELEASE = "kairyu"
NAMESPACE = "kairyu-system"
# Values that differ on every render (generated certificates, random passwords), replaced so that
# golden files compare what the chart decides, not what the random generator drew.
_RANDOM = re.compile(r"^(\s+(?:caBundle|ca\.crt|tls\.crt|tls\.key|password|url): ).+$", re.M)


def helm_binary() -> Path:
    if directory := os.environ.get("KAIRYU_HELM_DIR"):
        return Path(directory) / "helm"
    return run_build(Path("tools/helm/build.sh")) / "helm"


def helm(*args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/kairyu-helm/cache"}
    env |= {
        "HELM_CONFIG_HOME": "/tmp/kairyu-helm/config",
        "HELM_DATA_HOME": "/tmp/kairyu-helm/data",
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=300,
    )


def values_files() -> list[Path]:
    return sorted((CHART / "ci").glob("*-values.yaml"))


def render(values: Path | None = None, *extra: str) -> str:
    args = ["template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", KUBE_VERSION]
    if values is not None:
        args += ["-f", str(values)]
    done = helm(*args, *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout


def stable(rendered: str) -> str:
    return _RANDOM.sub(r"\1<generated>", rendered)


def documents(rendered: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered) if d]
