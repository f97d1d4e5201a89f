"""What one Workspace asks of the provisioner: the planned nodes, reduced to plain values."""

from __future__ import annotations

from dataclasses import dataclass, field

from kairyu_contracts.api import LabelSelector, Workspace
from kairyu_contracts.catalog import Catalog

DEFAULT_DISK_GIB = 1024
"""Storage asked for when the model is not a preset (KAITO's default)."""


@dataclass(frozen=True)
class NodeTarget:
    """The nodes a Workspace's current plan needs."""

    namespace: str
    name: str
    uid: str
    generation: int
    instance_type: str
    node_count: int
    disk_gib: int
    selector: LabelSelector
    preferred_nodes: tuple[str, ...] = ()
    current_nodes: tuple[str, ...] = ()
    """status.workerNodes: kept when still usable, so a re-check does not shuffle nodes."""
    match_labels: dict[str, str] = field(default_factory=dict)
    """The selector's matchLabels: provisioned nodes carry them so the workload's affinity holds."""
    plan_digest: str | None = None
    """status.plan.digest: recorded as status.workerNodesPlanDigest beside the nodes chosen."""
    replacing: str | None = None
    """status.surgeReplaces to report: the node an update's spare replaces (.surge)."""
    keep_nodes: tuple[str, ...] = ()
    """The nodes whose claims stay when the count shrinks (a surge's spare; kairyu_provisioner
    .surge); empty: the lowest-numbered claims stay."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def target_of(workspace: Workspace, catalog: Catalog) -> NodeTarget | None:
    """The nodes the Workspace's plan for its current generation needs; None without a plan."""
    meta = workspace.metadata
    status = workspace.status
    plan = status.plan if status else None
    if plan is None or plan.observed_generation != meta.generation:
        return None
    preset_name = None
    if workspace.inference is not None and workspace.inference.preset is not None:
        preset_name = workspace.inference.preset.name
    elif workspace.tuning is not None and workspace.tuning.preset is not None:
        preset_name = workspace.tuning.preset.name
    preset = catalog.preset(preset_name) if preset_name else None
    resource = workspace.resource
    return NodeTarget(
        namespace=meta.namespace or "",
        name=meta.name or "",
        uid=meta.uid or "",
        generation=meta.generation or 0,
        instance_type=plan.instance_type,
        node_count=plan.node_count,
        # The plan's own figure first: a Hugging Face model sized from the Hub has no preset.
        disk_gib=plan.disk_gib or (preset.disk_gib if preset else DEFAULT_DISK_GIB),
        selector=resource.label_selector,
        preferred_nodes=tuple(resource.preferred_nodes or ()),
        current_nodes=tuple(status.worker_nodes or ()) if status else (),
        match_labels=dict(resource.label_selector.match_labels or {}),
        plan_digest=plan.digest,
    )
