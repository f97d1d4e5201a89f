"""The kaito.sh Workspace API: pydantic models of both served versions.

The CRD is generated from these models (`python -m kairyu_contracts.api`)..
"""

from kairyu_contracts.api.conditions import ConditionType, set_condition
from kairyu_contracts.api.crd import render_yaml, workspace_crd
from kairyu_contracts.api.meta import Condition, ConditionStatus, LabelSelector, ObjectMeta
from kairyu_contracts.api.workspace import (
    GROUP,
    KIND,
    MAX_NODE_COUNT,
    PLURAL,
    AdapterSpec,
    DataDestination,
    DataSource,
    InferenceSpec,
    Plan,
    PresetSpec,
    ReplanRequest,
    ResourceSpec,
    TuningInput,
    TuningSpec,
    Workspace,
    WorkspaceState,
    WorkspaceStatus,
    WorkspaceV1Alpha1,
    WorkspaceV1Beta1,
    parse_workspace,
)

__all__ = [
    "GROUP",
    "KIND",
    "MAX_NODE_COUNT",
    "PLURAL",
    "AdapterSpec",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "DataDestination",
    "DataSource",
    "InferenceSpec",
    "LabelSelector",
    "ObjectMeta",
    "Plan",
    "PresetSpec",
    "ReplanRequest",
    "ResourceSpec",
    "TuningInput",
    "TuningSpec",
    "Workspace",
    "WorkspaceState",
    "WorkspaceStatus",
    "WorkspaceV1Alpha1",
    "WorkspaceV1Beta1",
    "parse_workspace",
    "render_yaml",
    "set_condition",
    "workspace_crd",
]
