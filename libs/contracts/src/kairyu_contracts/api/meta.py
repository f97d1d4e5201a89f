"""Kubernetes meta/v1 types the Workspace uses: object metadata, label selectors, conditions."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from kairyu_contracts.api._base import ApiModel

# DNS-1123 label: what Kubernetes accepts as a namespace or Service name (63 characters at most).
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# DNS-1123 subdomain: what Kubernetes accepts as most object names and as a container name here.
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class ObjectMeta(ApiModel):
    """The subset of metav1.ObjectMeta that kairyu reads; other keys are kept as extras."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    finalizers: list[str] | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None


class LabelSelectorRequirement(ApiModel):
    """One expression of a label selector."""

    key: str
    operator: Annotated[
        str, Field(json_schema_extra={"enum": ["In", "NotIn", "Exists", "DoesNotExist"]})
    ]
    values: list[str] | None = None


class LabelSelector(ApiModel):
    """A metav1.LabelSelector: nodes matching it may run the workload."""

    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        """metav1.LabelSelector semantics; an empty selector matches everything."""
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        for expr in self.match_expressions or []:
            values = set(expr.values or [])
            present = expr.key in labels
            ok = {
                "In": present and labels.get(expr.key) in values,
                "NotIn": not present or labels.get(expr.key) not in values,
                "Exists": present,
                "DoesNotExist": not present,
            }.get(expr.operator, False)
            if not ok:
                return False
        return True


class ConditionStatus(StrEnum):
    """The status of a condition, as metav1.Condition spells it."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A metav1.Condition: one observation of one aspect of the Workspace."""

    type: Annotated[str, Field(max_length=316)]
    """The aspect this condition describes, e.g. ResourceReady."""
    status: ConditionStatus
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    """The metadata.generation the condition was set for."""
    last_transition_time: datetime
    """When status last changed."""
    reason: Annotated[
        str,
        Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
    ]
    """A CamelCase word naming why the condition is in this state."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """A human-readable explanation."""


def preserve_unknown(description: str) -> dict[str, Any]:
    """Field options for a schemaless object (a PodTemplateSpec, a VolumeSource)."""
    return {
        "description": description,
        "json_schema_extra": {"x-kubernetes-preserve-unknown-fields": True},
    }


Conditions = Annotated[
    list[Condition] | None,
    Field(
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        }
    ),
]
"""A status's conditions: a list-map keyed by type, so each writer's server-side apply keeps
the others' conditions."""
