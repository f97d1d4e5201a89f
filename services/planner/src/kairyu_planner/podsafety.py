"""What a Workspace may put into the pods kairyu creates for it (the webhook's and planner's rules).

A Workspace is a way to create pods: `inference.template` runs as written, and the
`volumeSource` of tuning inputs and outputs and of adapters is spliced into the generated pods.
Anyone allowed to create a Workspace could otherwise mount the node's root file system
(`hostPath: /`), join the node's network or PID namespace, or run a privileged container, and so
own the GPU node and every credential on it. These rules refuse that unless the admin says
otherwise (`PlanningSettings.allow_host_access`), and refuse template shapes the deployer cannot
build a workload from (a string where the pod spec should be), so a bad spec is refused with a
message instead of failing on every retry.

The volume types allowed are the restricted Pod Security Standard's list: the ones that cannot
reach the node's own files or devices. Pure: no I/O; each function returns messages.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from kairyu_core.api import Workspace

SAFE_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
"""Volume types the restricted Pod Security Standard allows; every other type (hostPath, nfs,
iscsi, rbd, ...) reaches the node or the network below the cluster and needs the admin's leave."""
_SAFE_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})  # the one capability "restricted" allows
_HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
_OBJECT_LISTS = ("volumes", "tolerations", "imagePullSecrets", *_CONTAINER_LISTS)
ALLOW_SETTING = "KAIRYU_PLANNING__ALLOW_HOST_ACCESS"


def problems(ws: Workspace, *, allow_host_access: bool) -> list[str]:
    """Every reason the Workspace's pods would be unsafe or unbuildable (empty: none)."""
    found: list[str] = []
    for where, source in _volume_sources(ws):
        found += volume_source_problems(where, source, allow_host_access=allow_host_access)
    if ws.inference is not None and ws.inference.template is not None:
        found += template_problems(ws.inference.template, allow_host_access=allow_host_access)
    return found


def _volume_sources(ws: Workspace) -> Iterator[tuple[str, dict[str, Any]]]:
    if ws.tuning is not None:
        if ws.tuning.input.volume_source is not None:
            yield "tuning.input.volumeSource", ws.tuning.input.volume_source
        if ws.tuning.output.volume_source is not None:
            yield "tuning.output.volumeSource", ws.tuning.output.volume_source
    if ws.inference is not None:
        for index, adapter in enumerate(ws.inference.adapters or []):
            source = adapter.source.volume_source
            if source is not None:
                yield f"inference.adapters[{index}].source.volumeSource", source


def _denied(what: str) -> str:
    return (
        f"{what} is not allowed: it gives the pod access to the node (an admin can allow it: "
        f"{ALLOW_SETTING})"
    )


def volume_source_problems(
    where: str, source: Mapping[str, Any], *, allow_host_access: bool
) -> list[str]:
    """A core/v1 VolumeSource: exactly one type, given as an object, of an allowed kind."""
    types = [key for key in source if key != "name"]
    if len(types) != 1:
        return [f"{where} needs exactly one volume type, found {len(types)}: {sorted(types)}"]
    kind = types[0]
    if not isinstance(source[kind], dict):
        return [f"{where}.{kind} must be an object"]
    if kind not in SAFE_VOLUME_TYPES and not allow_host_access:
        return [
            f"{where}: volume type {kind} is not allowed (allowed: "
            f"{', '.join(sorted(SAFE_VOLUME_TYPES))}; an admin can allow node-level volumes: "
            f"{ALLOW_SETTING})"
        ]
    return []


def template_problems(template: Mapping[str, Any], *, allow_host_access: bool) -> list[str]:
    """A PodTemplateSpec: the shape the deployer needs, and no way into the node."""
    where = "inference.template"
    metadata = template.get("metadata")
    found: list[str] = []
    if metadata is not None:
        if not isinstance(metadata, dict):
            return [f"{where}.metadata must be an object"]
        for key in ("labels", "annotations"):
            value = metadata.get(key)
            if value is not None and not _string_map(value):
                found.append(f"{where}.metadata.{key} must map strings to strings")
    spec = template.get("spec")
    if not isinstance(spec, dict):
        return [*found, f"{where}.spec must be an object (a core/v1 PodSpec)"]
    for key in _OBJECT_LISTS:
        value = spec.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, dict) for v in value)
        ):
            found.append(f"{where}.spec.{key} must be a list of objects")
    if not spec.get("containers"):
        found.append(f"{where}.spec.containers must name at least one container")
    if found:
        return found
    for index, volume in enumerate(spec.get("volumes") or []):
        found += volume_source_problems(
            f"{where}.spec.volumes[{index}]", volume, allow_host_access=allow_host_access
        )
    found += _pod_security(spec, f"{where}.spec", allow_host_access=allow_host_access)
    return found


def _string_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _pod_security(spec: Mapping[str, Any], where: str, *, allow_host_access: bool) -> list[str]:
    found: list[str] = []
    for key in _HOST_NAMESPACES:
        if spec.get(key) and not allow_host_access:
            found.append(_denied(f"{where}.{key}"))
    pod_context = spec.get("securityContext")
    if pod_context is not None and not isinstance(pod_context, dict):
        found.append(f"{where}.securityContext must be an object")
    for key in _CONTAINER_LISTS:
        for index, container in enumerate(spec.get(key) or []):
            found += _container(container, f"{where}.{key}[{index}]", allow_host_access)
    return found


def _container(container: Mapping[str, Any], where: str, allow_host_access: bool) -> list[str]:
    found: list[str] = []
    context = container.get("securityContext")
    if context is not None and not isinstance(context, dict):
        return [f"{where}.securityContext must be an object"]
    context = context or {}
    ports = container.get("ports")
    if ports is not None and not (
        isinstance(ports, list) and all(isinstance(p, dict) for p in ports)
    ):
        found.append(f"{where}.ports must be a list of objects")
        ports = []
    if allow_host_access:
        return found
    if context.get("privileged"):
        found.append(_denied(f"{where}.securityContext.privileged"))
    capabilities = context.get("capabilities")
    if capabilities is not None and not isinstance(capabilities, dict):
        return [*found, f"{where}.securityContext.capabilities must be an object"]
    added = (capabilities or {}).get("add")
    if isinstance(added, list):
        extra = sorted({str(c) for c in added} - _SAFE_CAPABILITIES)
        if extra:
            found.append(_denied(f"{where}.securityContext.capabilities.add {extra}"))
    elif added is not None:
        found.append(f"{where}.securityContext.capabilities.add must be a list")
    if any(p.get("hostPort") for p in ports or []):
        found.append(_denied(f"{where}.ports[].hostPort"))
    return found
