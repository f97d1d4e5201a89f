"""Waiting on a Workspace's status in tests, as a user watching `kubectl get workspace` would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from kairyu_core.kube import KubeClient, resources

Check = Callable[[dict[str, Any]], bool]


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """The condition of that type as the apiserver returned it, or {}."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


def is_true(kind: str) -> Check:
    return lambda obj: condition(obj, kind).get("status") == "True"


def has_reason(kind: str, reason: str) -> Check:
    return lambda obj: condition(obj, kind).get("reason") == reason


def in_state(state: str) -> Check:
    """`status.state`: the summary, written with the condition that caused it."""
    return lambda obj: (obj.get("status") or {}).get("state") == state


async def until(
    kube: KubeClient,
    namespace: str,
    name: str,
    accept: Check,
    *,
    what: str,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """The Workspace once `accept` holds; fails with its last status after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = await kube.get(resources.WORKSPACES, name, namespace=namespace)
        if accept(obj):
            return obj
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not reached; status: {obj.get('status')}")


def workspace_of_span(attributes: dict[str, Any]) -> str | None:
    """The `namespace/name` of the Workspace a span's attributes (or Jaeger tags) name, if any."""
    if "kairyu.workspace" in attributes:
        return str(attributes["kairyu.workspace"])
    if "kairyu.workspace.name" in attributes:
        return f"{attributes['kairyu.workspace.namespace']}/{attributes['kairyu.workspace.name']}"
    return None
