"""A Kubernetes client that records what a reconcile writes and refuses reads: for unit tests.

Reconcile logic reads a `View` and writes through a `KubeClient`. Tests of it give it this client:
every write (POST, PUT, PATCH, DELETE) is recorded and answered as the apiserver would for a
success (the body back, with a resourceVersion), so a test asserts exactly what would be sent;
a GET or LIST fails the test unless the test allows it (`allow_reads`), because reading the
apiserver on the hot path is what the view replaces. `fail_with` makes the next matching call
raise, to test how a reconcile handles a refused write.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from kairyu_core.kube import JSON, KubeClient, errors


@dataclass
class Call:
    """One request the reconcile made."""

    method: str
    path: str
    body: Any = None
    query: dict[str, Any] = field(default_factory=dict)


class ReadForbiddenError(AssertionError):
    """The reconcile read the apiserver where it should have read its view."""


class RecordingKube(KubeClient):
    """Records writes; answers GETs only from `answers` when reads are allowed."""

    def __init__(self, *, allow_reads: bool = False) -> None:  # no API client: nothing is sent
        self.calls: list[Call] = []
        self.allow_reads = allow_reads
        self.answers: dict[str, JSON] = {}
        """path → what a GET of it returns (with `allow_reads`); a missing path is a 404."""
        self.failures: dict[tuple[str, str], errors.KubeError] = {}
        self._version = 0

    def fail_with(self, method: str, path_part: str, error: errors.KubeError) -> None:
        """The next `method` request whose path contains `path_part` raises `error`."""
        self.failures[(method, path_part)] = error

    async def close(self) -> None:
        return None

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str | int | bool] | None = None,
        body: JSON | list[JSON] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        stream: bool = False,
    ) -> Any:
        for (failing, part), error in list(self.failures.items()):
            if failing == method and part in path:
                del self.failures[(failing, part)]
                raise error
        if method == "GET":
            if not self.allow_reads:
                raise ReadForbiddenError(f"GET {path}: a reconcile must read its view")
            self.calls.append(Call(method, path, None, dict(query or {})))
            if path in self.answers:
                return copy.deepcopy(self.answers[path])
            raise errors.NotFoundError(f"GET {path}: 404 (not in the recording's answers)")
        self.calls.append(Call(method, path, copy.deepcopy(body), dict(query or {})))
        self._version += 1
        if isinstance(body, dict):
            answer = copy.deepcopy(body)
            meta = answer.setdefault("metadata", {})
            meta["resourceVersion"] = str(self._version)
            # The apiserver answers every write with the object's uid (kube.apply_owned keeps
            # it); one that names none gets a stable one made of its path.
            meta.setdefault("uid", f"uid:{path}")
            return answer
        return {"metadata": {"resourceVersion": str(self._version)}}

    # ------------------------------------------------------------------ what tests read
    @property
    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method != "GET"]

    def writes_to(self, path_part: str, method: str | None = None) -> list[Call]:
        """Writes whose path contains `path_part` (and of `method`, if given)."""
        return [
            c for c in self.writes if path_part in c.path and (method is None or c.method == method)
        ]
