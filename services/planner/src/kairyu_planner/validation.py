"""KAITO's semantic Workspace rules (its webhook's), for the webhook and the condition path.

Pure: the admission webhook and the planner's condition path call the same `validate`. Rules the
CRD schema already enforces (types, "exactly one of") are not repeated here. The resource checks
(enough GPU memory on the named instance type) run the planner itself, so the webhook can never
admit what the planner would refuse for lack of memory; `kaito.sh/bypass-resource-checks: "True"`
turns them into warnings, as in KAITO. They run on CREATE only: an update cannot change the
preset or the instance type, and a settings change must not block edits of existing Workspaces.

An UPDATE is checked for immutability and for the safety rules (pod safety, tuning URLs) of what
it changes, nothing else: a Workspace admitted under older settings must stay editable. The
webhook admits an update that changes only metadata or status, or one of a Workspace being
deleted, before this code runs (webhook.review), so a finalizer can always be removed.

Messages follow KAITO's where KAITO has one ("field is immutable: inference.preset").
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kairyu_contracts.api import Workspace
from kairyu_contracts.catalog import Catalog, Cloud, load_catalog
from kairyu_contracts.catalog.sizing import is_hf_id
from kairyu_contracts.labels import RUNTIME_ANNOTATION, WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL
from kairyu_planner import podsafety
from kairyu_planner.planning import PlanError, PlanReason, plan_workspace, supported_skus
from kairyu_planner.settings import PlanningSettings

ANNOTATION_VALUES = {
    "kaito.sh/node-image-family": {"azurelinux", "ubuntu"},
    "kaito.sh/performance-mode": {"balanced", "interactivity", "throughput"},
    "kaito.sh/use-local-weights": {"true", "false"},
    RUNTIME_ANNOTATION: {"vllm", "transformers", "triton"},
}
_CASELESS_ANNOTATIONS = {"kaito.sh/node-image-family"}
RESERVED_LABELS = {
    WORKSPACE_LABEL,
    "kaito.sh/ragengine",
    WORKSPACE_NAMESPACE_LABEL,
    "kaito.sh/ragenginenamespace",
    "karpenter.kaito.sh/workspace-name",
    "karpenter.kaito.sh/workspace-namespace",
    "karpenter.kaito.sh/inferenceset",
    "karpenter.kaito.sh/inferenceset-namespace",
}
# Hosts that answer with cloud credentials or that only mean "this machine".
_FORBIDDEN_HOSTS = {
    "localhost",
    "metadata.google.internal",
    "metadata.google",
    "instance-data.ec2.internal",
}


@dataclass
class Verdict:
    """Errors refuse the Workspace; warnings are shown to the user and let it through."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not self.errors


# Plan failures that are about capacity, which the bypass annotation may waive.
_RESOURCE_REASONS = {
    PlanReason.INSUFFICIENT_GPU_MEMORY,
    PlanReason.MULTI_NODE_NOT_SUPPORTED,
    PlanReason.NO_SUITABLE_SKU,
}
# Plan failures that are the admin's limits: no annotation waives them.
_LIMIT_REASONS = {PlanReason.NODE_LIMIT_EXCEEDED, PlanReason.COST_LIMIT_EXCEEDED}
# KAITO accepts Azure GPU and general-purpose SKUs it has no table row for.
_AZURE_LENIENT_PREFIXES = ("standard_n", "standard_d")


def validate(
    new: Workspace,
    old: Workspace | None = None,
    *,
    catalog: Catalog | None = None,
    planning: PlanningSettings | None = None,
    resource_checks: bool = True,
    admission: bool = True,
) -> Verdict:
    """Check `new` (a CREATE when `old` is None, an UPDATE otherwise).

    `resource_checks=False` skips the GPU memory checks, for callers that plan right after and
    report the planner's own, more specific reason. `admission=False` skips the rules KAITO
    applies only when an object is created, for the planner, which judges every generation as
    new: a Workspace admitted before keeps being planned.
    """
    catalog = catalog or load_catalog()
    planning = planning or PlanningSettings()
    verdict = Verdict()
    _check_safety(new, verdict, planning)
    if old is not None:
        _check_update(old, new, verdict)
        return verdict
    _check_annotations(new, verdict)
    _check_deprecated_fields(new, verdict)
    _check_label_selector(new, verdict)
    if admission and planning.byo and new.resource.instance_type:
        verdict.errors.append(
            "instanceType must be empty when node auto-provisioning is disabled (BYO scenario): "
            "resource.instanceType (kairyu sizes the Workspace from the GPU labels of the nodes "
            "its labelSelector matches)"
        )
    _check_instance_type(new, verdict, catalog, planning)
    _check_presets(new, verdict, catalog)
    _check_adapters(new, verdict)
    _check_tuning(new, verdict)
    _check_node_count(new, verdict, planning)
    # Your own nodes (byo, no instanceType) are sized from their labels at plan time, and a
    # Hub model from the Hub: the planner reports what does not fit.
    own_nodes = planning.byo and not new.resource.instance_type
    if resource_checks and not verdict.errors and not _from_hub(new, catalog) and not own_nodes:
        _check_resources(new, verdict, catalog, planning)
    return verdict


def _check_safety(ws: Workspace, verdict: Verdict, planning: PlanningSettings) -> None:
    """What the Workspace's pods may do and fetch: checked on every write that changes the spec."""
    verdict.errors.extend(podsafety.problems(ws, allow_host_access=planning.allow_host_access))
    if ws.tuning is not None:
        for index, url in enumerate(ws.tuning.input.urls or []):
            problem = unsafe_url_reason(url)
            if problem:
                verdict.errors.append(f"tuning.input.urls[{index}]: {problem}")


def _check_node_count(ws: Workspace, verdict: Verdict, planning: PlanningSettings) -> None:
    count = ws.resource.count
    if count is not None and count > planning.max_nodes:
        verdict.errors.append(
            f"resource.count {count} is more than the limit of {planning.max_nodes} nodes per "
            f"Workspace (KAIRYU_PLANNING__MAX_NODES)"
        )


def _check_instance_type(
    ws: Workspace, verdict: Verdict, catalog: Catalog, planning: PlanningSettings
) -> None:
    name = ws.resource.instance_type
    if not name:
        return
    sku = catalog.sku(name)
    if sku is not None and sku.cloud == planning.cloud:
        return
    if planning.cloud == Cloud.AZURE and name.lower().startswith(_AZURE_LENIENT_PREFIXES):
        verdict.warnings.append(
            f"instance type {name} is not in kairyu's GPU SKU catalog: the planner cannot size "
            f"it and the Workspace will not be planned"
        )
        return
    known = ", ".join(supported_skus(catalog, planning))
    verdict.errors.append(f"Unsupported instance type {name}. Supported SKUs: {known}")


def _check_presets(ws: Workspace, verdict: Verdict, catalog: Catalog) -> None:
    if ws.inference is not None and ws.inference.preset is not None:
        spec = ws.inference.preset
        preset = catalog.preset(spec.name)
        if preset is None and is_hf_id(spec.name):
            verdict.warnings.append(
                f"{spec.name} is not in kairyu's catalog: the planner sizes it from the Hugging "
                f"Face Hub (its config.json and weights) when it plans; if they cannot be read, "
                f"Planned=False says why"
            )
            return
        if preset is None:
            verdict.errors.append(_unknown_preset(spec.name, catalog))
            return
        if preset.deprecated:
            verdict.warnings.append(
                f"preset {spec.name} is deprecated (KAITO v0.11) and will be removed; it is "
                f"still served"
            )
        secret = spec.preset_options.model_access_secret if spec.preset_options else None
        if preset.download_auth_required and not secret:
            verdict.errors.append(
                f"preset {preset.name} is gated on Hugging Face: set "
                f"inference.preset.presetOptions.modelAccessSecret to a Secret with HF_TOKEN"
            )
        if ws.inference.adapters and not preset.lora and _runtime(ws) == "vllm":
            verdict.errors.append(f"vLLM does not support LoRA adapters for preset {preset.name}")
    if ws.tuning is not None:
        tuned = catalog.preset(ws.tuning.preset.name)
        if tuned is None:
            verdict.errors.append(_unknown_preset(ws.tuning.preset.name, catalog))
        elif not tuned.tuning:
            verdict.errors.append(f"preset {tuned.name} does not support tuning")


def _from_hub(ws: Workspace, catalog: Catalog) -> bool:
    """Whether the model is a Hugging Face id outside the catalog, sized when it is planned.

    Not here: the webhook must answer within its timeout, without asking the Hub.
    """
    preset = ws.inference.preset if ws.inference else None
    return preset is not None and catalog.preset(preset.name) is None and is_hf_id(preset.name)


def _unknown_preset(name: str, catalog: Catalog) -> str:
    return (
        f"Unsupported preset name {name}. Supported presets: {', '.join(sorted(catalog.presets))}"
    )


def _check_resources(
    ws: Workspace, verdict: Verdict, catalog: Catalog, planning: PlanningSettings
) -> None:
    try:
        result = plan_workspace(ws, catalog, planning)
    except PlanError as exc:
        if exc.reason in _RESOURCE_REASONS | _LIMIT_REASONS:
            verdict.errors.append(exc.message)
        return
    verdict.warnings.extend(result.warnings)


def _check_annotations(ws: Workspace, verdict: Verdict) -> None:
    for key, allowed in ANNOTATION_VALUES.items():
        value = (ws.metadata.annotations or {}).get(key)
        if key in _CASELESS_ANNOTATIONS and value is not None:
            value = value.lower()  # KAITO's own examples write "AzureLinux"
        if value is not None and value not in allowed:
            verdict.errors.append(
                f"invalid value {value!r} for annotation {key}: must be one of {sorted(allowed)}"
            )


def _check_deprecated_fields(ws: Workspace, verdict: Verdict) -> None:
    """KAITO v1beta1 deprecates these; they still work, with a warning."""
    if ws.version != "v1beta1":
        return
    if ws.resource.count is not None:
        verdict.warnings.append(
            "resource.count is deprecated in v1beta1 and will be removed: the planner computes "
            "the node count (status.targetNodeCount)"
        )
    if ws.resource.preferred_nodes:
        verdict.warnings.append("resource.preferredNodes is deprecated in v1beta1")
    preset = (ws.inference.preset if ws.inference else None) or (
        ws.tuning.preset if ws.tuning else None
    )
    options = preset.preset_options if preset else None
    if preset and (
        preset.access_mode or (options and (options.image or options.image_pull_secrets))
    ):
        verdict.warnings.append(
            "preset.accessMode and presetOptions.image / imagePullSecrets are deprecated in "
            "v1beta1: model weights are downloaded at run time"
        )


def _check_label_selector(ws: Workspace, verdict: Verdict) -> None:
    selector = ws.resource.label_selector
    if any(e.operator != "In" for e in selector.match_expressions or []):
        verdict.errors.append(
            "Only allow matchLabels or 'IN' matchExpression: resource.labelSelector"
        )
    labels = selector.match_labels or {}
    reserved = sorted(set(labels) & RESERVED_LABELS)
    if reserved:
        verdict.warnings.append(
            f"reserved label keys {reserved} in resource.labelSelector are ignored"
        )
        if len(reserved) == len(labels):
            verdict.errors.append(
                "resource.labelSelector.matchLabels needs at least one key that is not reserved"
            )


def _runtime(ws: Workspace) -> str:
    return (ws.metadata.annotations or {}).get(RUNTIME_ANNOTATION, "vllm")


def _check_adapters(ws: Workspace, verdict: Verdict) -> None:
    if ws.inference is None or _runtime(ws) != "vllm":
        return
    for adapter in ws.inference.adapters or []:
        # vLLM applies a LoRA adapter at full strength, so "1.0" is accepted (the seed uses it).
        if adapter.strength is not None and float(adapter.strength) != 1.0:
            verdict.errors.append(
                f"vLLM does not support adapter strength ({adapter.source.name}: "
                f"{adapter.strength}); use the transformers runtime (kaito.sh/runtime annotation)"
            )


def _check_tuning(ws: Workspace, verdict: Verdict) -> None:
    if ws.tuning is None:
        return
    if (ws.resource.count or 1) > 1:
        verdict.errors.append(
            "Tuning does not currently support multinode configurations: resource.count"
        )
    if ws.resource.partition is not None:
        verdict.errors.append("partition is not supported for tuning: resource.partition")


def unsafe_url_reason(url: str) -> str | None:
    """Why `url` must not be fetched from inside the cluster, or None if it may be."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"only http and https URLs are allowed, not {parts.scheme!r}"
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        return "the URL has no host"
    if host in _FORBIDDEN_HOSTS or host.endswith(".localhost"):
        return f"host {host} is not allowed (local or cloud metadata address)"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: the downloader checks the addresses it resolves to before connecting
    flags = (address.is_loopback, address.is_private, address.is_link_local, address.is_unspecified)
    if any(flags) or address.is_multicast or address.is_reserved:
        return f"address {address} is not allowed (loopback, private, link-local or metadata)"
    return None


def _check_update(old: Workspace, new: Workspace, verdict: Verdict) -> None:
    errors = verdict.errors
    if (old.inference is None) != (new.inference is None) or (old.tuning is None) != (
        new.tuning is None
    ):
        errors.append("inference and tuning cannot be toggled on or off after creation")
        return
    before, after = old.resource, new.resource
    unchanged: list[tuple[str, object, object]] = [
        ("resource.count", before.count, after.count),
        ("resource.partition", before.partition, after.partition),
        (
            "resource.labelSelector",
            before.label_selector.match_labels,
            after.label_selector.match_labels,
        ),
    ]
    if (
        before.instance_type and after.instance_type
    ):  # clearing it is allowed (BYO), changing it is not
        unchanged.append(("resource.instanceType", before.instance_type, after.instance_type))
    if old.inference is not None and new.inference is not None:
        unchanged.append(("inference.preset", old.inference.preset, new.inference.preset))
        if (old.inference.template is None) != (new.inference.template is None):
            errors.append("field cannot be unset/set if it was set/unset: inference.template")
    if old.tuning is not None and new.tuning is not None:
        unchanged += [
            ("tuning.preset", old.tuning.preset, new.tuning.preset),
            ("tuning.method", old.tuning.method.lower(), new.tuning.method.lower()),
            ("tuning.input.name", old.tuning.input.name, new.tuning.input.name),
        ]
    errors.extend(f"field is immutable: {name}" for name, was, now in unchanged if was != now)
