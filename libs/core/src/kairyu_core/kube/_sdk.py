"""The few parts of kubernetes_asyncio kairyu uses, imported without the rest of it.

`kubernetes_asyncio/__init__.py`, `client/__init__.py` and `client/models/__init__.py` import every
generated API class and model (about 900 modules): some 70 MiB resident, more than half of what
a service held after its imports (126 MiB, 57 without them), for code kairyu never calls, since
it sends plain dicts through `ApiClient.call_api`. Python runs a package's `__init__` before any
of its submodules, so importing `client.api_client` alone is not enough. Before the first import
of kubernetes_asyncio, `install` therefore puts those three packages in `sys.modules` unexecuted:
their `__path__` is the real one, so submodules (`client.api_client`, `client.rest`,
`config.kube_config`, ...) load alone. A name the real `__init__` exports is resolved on first
use: from the submodule that defines it where we know it (`client.ApiClient`), else by running
the real `__init__` then, so code that wants the whole package (`client.CoreV1Api`,
`models.V1Pod`) still gets it, only later.

Only this module imports kubernetes_asyncio; the rest of `kairyu_core.kube` imports from here.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

_ROOT = "kubernetes_asyncio"
# The packages whose __init__ imports the generated code, and where the names kairyu's imports
# (and kubernetes_asyncio's own config/watch modules) take from them are defined.
_LEAN: dict[str, dict[str, str]] = {
    _ROOT: {},
    f"{_ROOT}.client": {
        "ApiClient": "api_client",
        "Configuration": "configuration",
        "ApiException": "exceptions",
        "ApiTypeError": "exceptions",
        "ApiValueError": "exceptions",
        "ApiKeyError": "exceptions",
        "ApiAttributeError": "exceptions",
        "OpenApiException": "exceptions",
    },
    f"{_ROOT}.client.models": {},
}
# Dunder names that the real __init__ defines; any other dunder is a probe (pytest, inspect,
# copy) that must not load the whole package.
_EXPORTED_DUNDERS = frozenset({"__all__", "__version__", "__project__"})


class _LeanPackage:
    """The lazy `__getattr__` of one lean package, and its one-time fall-back to the real one."""

    def __init__(
        self, module: ModuleType, loader: importlib.abc.Loader, exports: dict[str, str]
    ) -> None:
        self.module = module
        self.loader = loader
        self.exports = exports
        self.state = "lean"  # -> "loading" -> "full"
        self.lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:  # bound as the module's __getattr__ (PEP 562)
        module = self.module
        if name in self.exports:
            return getattr(importlib.import_module(f"{module.__name__}.{self.exports[name]}"), name)
        if self._is_submodule(name):
            # `from package import submodule` asks getattr before importing it.
            return importlib.import_module(f"{module.__name__}.{name}")
        if name.startswith("__") and name not in _EXPORTED_DUNDERS:
            raise AttributeError(name)
        with self.lock:
            if self.state == "lean":
                self._load_fully()
        try:
            return module.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}") from None

    def _is_submodule(self, name: str) -> bool:
        path = self.module.__spec__.submodule_search_locations if self.module.__spec__ else None
        spec = importlib.machinery.PathFinder.find_spec(f"{self.module.__name__}.{name}", path)
        return spec is not None

    def _load_fully(self) -> None:
        """Run the real `__init__` in the lean module: it becomes the package it stands for."""
        self.state = "loading"  # lookups made by the __init__ itself must not come back here
        try:
            self.loader.exec_module(self.module)
        except BaseException:
            self.state = "lean"
            raise
        self.state = "full"


def install() -> None:
    """Put the lean packages in `sys.modules`, unless kubernetes_asyncio is imported already."""
    if _ROOT in sys.modules:
        return  # someone imported it whole first; it works, only heavier
    parent: ModuleType | None = None
    for name, exports in _LEAN.items():
        path = parent.__spec__.submodule_search_locations if parent and parent.__spec__ else None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            raise ModuleNotFoundError(name, name=name)
        module = importlib.util.module_from_spec(spec)
        module.__dict__["__getattr__"] = _LeanPackage(module, spec.loader, exports).__getattr__
        sys.modules[name] = module
        if parent is not None:
            setattr(parent, name.rpartition(".")[2], module)  # as the import system would
        parent = module


install()

# After install(), or the packages' __init__ files would load everything after all.
from kubernetes_asyncio.client.api_client import ApiClient  # noqa: E402
from kubernetes_asyncio.client.configuration import Configuration  # noqa: E402
from kubernetes_asyncio.client.exceptions import ApiException  # noqa: E402
from kubernetes_asyncio.config.config_exception import ConfigException  # noqa: E402
from kubernetes_asyncio.config.incluster_config import load_incluster_config  # noqa: E402
from kubernetes_asyncio.config.kube_config import new_client_from_config  # noqa: E402

__all__ = [
    "ApiClient",
    "ApiException",
    "ConfigException",
    "Configuration",
    "install",
    "load_incluster_config",
    "new_client_from_config",
]
