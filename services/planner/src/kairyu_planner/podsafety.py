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
reach the node's own files or devices. The other rules are the baseline Pod Security Standard's
(no host namespaces, privileged containers, added capabilities, host ports, custom SELinux
users/roles/types, Unconfined seccomp or AppArmor, unmasked /proc, Windows host processes, unsafe
sysctls) plus two of restricted's that only ever widen what a container may do: privilege
escalation, and an explicit `runAsUser: 0`. Restricted's other rules (runAsNonRoot required,
capabilities dropped, a seccomp profile set) are not required of a template: KAITO's template
examples run images as root with no securityContext at all, and the deployer adds what is
missing. `runAsNonRoot: false` is admitted: it is the same as leaving it unset (the image's
user), whereas `runAsUser: 0` turns an image built to run as a user into root.
Pure: no I/O; each function returns messages.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from kairyu_contracts.api import Workspace

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
SAFE_SELINUX_TYPES = frozenset(
    {"container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
"""The SELinux types the baseline Pod Security Standard allows (an unset type is allowed too)."""
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
"""The baseline Pod Security Standard's safe sysctls: namespaced, and unable to affect other
pods on the node."""
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


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
    if not allow_host_access:
        found += _apparmor_annotations((metadata or {}).get("annotations"), f"{where}.metadata")
    return found


def _apparmor_annotations(annotations: object, where: str) -> list[str]:
    if not isinstance(annotations, dict):
        return []
    return [
        _denied(f"{where}.annotations[{key}]={value}")
        for key, value in annotations.items()
        if isinstance(key, str)
        and key.startswith(_APPARMOR_ANNOTATION)
        and not (value == "runtime/default" or str(value).startswith("localhost/"))
    ]


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
    elif pod_context is not None and not allow_host_access:
        found += _context_problems(pod_context, f"{where}.securityContext")
        found += _sysctl_problems(pod_context.get("sysctls"), f"{where}.securityContext")
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
    if context.get("allowPrivilegeEscalation") is True:
        found.append(_denied(f"{where}.securityContext.allowPrivilegeEscalation: true"))
    proc_mount = context.get("procMount")
    if proc_mount is not None and proc_mount != "Default":
        found.append(_denied(f"{where}.securityContext.procMount {proc_mount}"))
    found += _context_problems(context, f"{where}.securityContext")
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


def _context_problems(context: Mapping[str, Any], where: str) -> list[str]:
    """Rules a pod's and a container's securityContext share (baseline, and restricted's root)."""
    found: list[str] = []
    if context.get("runAsUser") == 0 and not isinstance(context.get("runAsUser"), bool):
        found.append(_denied(f"{where}.runAsUser: 0 (root)"))
    found += _selinux_problems(context.get("seLinuxOptions"), f"{where}.seLinuxOptions")
    for key in ("seccompProfile", "appArmorProfile"):
        profile = context.get(key)
        if profile is None:
            continue
        if not isinstance(profile, dict):
            found.append(f"{where}.{key} must be an object")
        elif profile.get("type") == "Unconfined":
            found.append(_denied(f"{where}.{key}.type Unconfined"))
    windows = context.get("windowsOptions")
    if windows is not None:
        if not isinstance(windows, dict):
            found.append(f"{where}.windowsOptions must be an object")
        elif windows.get("hostProcess"):
            found.append(_denied(f"{where}.windowsOptions.hostProcess"))
    return found


def _selinux_problems(selinux: object, where: str) -> list[str]:
    if selinux is None:
        return []
    if not isinstance(selinux, dict):
        return [f"{where} must be an object"]
    found: list[str] = []
    kind = selinux.get("type")
    if kind not in (None, "") and kind not in SAFE_SELINUX_TYPES:
        found.append(_denied(f"{where}.type {kind}"))
    for key in ("user", "role"):
        if selinux.get(key) not in (None, ""):
            found.append(_denied(f"{where}.{key}"))
    return found


def _sysctl_problems(sysctls: object, where: str) -> list[str]:
    if sysctls is None:
        return []
    if not isinstance(sysctls, list) or not all(isinstance(s, dict) for s in sysctls):
        return [f"{where}.sysctls must be a list of objects"]
    unsafe = sorted({str(s.get("name")) for s in sysctls} - SAFE_SYSCTLS)
    if unsafe:
        return [_denied(f"{where}.sysctls {unsafe}")]
    return []
