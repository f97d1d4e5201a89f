"""What a service image installs: its package and the product libraries, nothing of the dev side.

Each service's environment is built the way images/service.Dockerfile builds it (`uv sync --frozen
--no-dev --package kairyu-<service> --no-editable`: the workspace members become wheels), into a
temporary directory. Then that environment's own Python lists what is installed and imports every
module of every kairyu package in it, so a product module that reaches for the dev environment
fails here, not in a cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TypedDict

import pytest

from kairyu_core.bus.topology import SERVICES

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_LIBRARIES = {"kairyu-contracts", "kairyu-core"}
DEV_ONLY = {
    "kairyu-devenv",
    "kairyu-cli",
    "pytest",
    "trustme",
    "hypothesis",
    "mypy",
    "ruff",
    "playwright",
}
DEV_MODULES = {"kairyu_localenv", "kairyu_testing", "kairyu_cli"}
WORKSPACE_MEMBERS = (
    "kairyu-contracts",
    "kairyu-core",
    "kairyu-cli",
    *(f"kairyu-{service}" for service in SERVICES),
)

# Run by the environment's own interpreter: the installed distributions, and every kairyu module
# imported, the services' `__main__` included (the module an image runs; each is guarded by
# `if __name__ == "__main__"`). The one skipped prints a CRD when imported.
_INSPECT = """
import importlib, importlib.metadata, json, pkgutil, sys
dists = sorted({d.metadata["Name"].lower() for d in importlib.metadata.distributions()})
top = sorted(m.name for m in pkgutil.iter_modules() if m.name.startswith("kairyu"))
modules, failures = [], {}
for name in top:
    package = importlib.import_module(name)
    modules.append(name)
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        if info.name == "kairyu_contracts.api.__main__":
            continue
        modules.append(info.name)
        try:
            importlib.import_module(info.name)
        except Exception as error:
            failures[info.name] = repr(error)
json.dump({"dists": dists, "top": top, "modules": modules, "failures": failures}, sys.stdout)
"""


class Installed(TypedDict):
    dists: list[str]  # distribution names, lower case
    top: list[str]  # the top-level kairyu packages
    modules: list[str]  # every kairyu module found (and imported)
    failures: dict[str, str]  # module -> the error its import raised


def _uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv") or str(ROOT / ".tools/bin/uv")
    if not Path(found).exists():
        pytest.fail("uv is not installed: run `make sync` (make test does)")
    return found


def _environment(package: str, where: Path) -> Installed:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["UV_PROJECT_ENVIRONMENT"] = str(where)
    # uv keys its cache of a local package's built wheel on its pyproject.toml alone: without the
    # refresh, a module changed since the last build would not be in the wheel tested here.
    refresh = [f"--reinstall-package={member}" for member in WORKSPACE_MEMBERS]
    subprocess.run(
        [
            _uv(),
            "sync",
            "--frozen",
            "--no-dev",
            "--no-editable",
            "--quiet",
            "--package",
            package,
            *refresh,
        ],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    done = subprocess.run(
        [str(where / "bin/python"), "-c", _INSPECT],
        cwd=where,  # not the checkout: nothing may be imported from the source tree
        env={"PATH": os.environ.get("PATH", ""), "PYTHONSAFEPATH": "1"},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result: Installed = json.loads(done.stdout)
    return result


pytestmark = pytest.mark.packaging


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_image_holds_its_package_and_the_product_libraries_only(
    service: str, tmp_path: Path
) -> None:
    found = _environment(f"kairyu-{service}", tmp_path / "env")

    dists = set(found["dists"])
    kairyu = {d for d in dists if d.startswith("kairyu")}
    assert kairyu == PRODUCT_LIBRARIES | {f"kairyu-{service}"}
    assert not dists & DEV_ONLY
    assert found["top"] == sorted({"kairyu_contracts", "kairyu_core", f"kairyu_{service}"})
    modules = found["modules"]
    assert not {m.split(".")[0] for m in modules} & DEV_MODULES
    assert f"kairyu_{service}.app" in modules
    assert f"kairyu_{service}.__main__" in modules
    assert "kairyu_core.bus" in modules
    assert found["failures"] == {}, "a product module needs something its image does not hold"


def test_the_cli_installs_the_planner_it_previews_with_but_no_dev_environment(
    tmp_path: Path,
) -> None:
    found = _environment("kairyu-cli", tmp_path / "env")

    dists = set(found["dists"])
    assert {d for d in dists if d.startswith("kairyu")} == PRODUCT_LIBRARIES | {
        "kairyu-planner",
        "kairyu-cli",
    }
    assert not dists & (DEV_ONLY - {"kairyu-cli"})
    assert found["failures"] == {}
    assert (tmp_path / "env/bin/kairyu").exists()
