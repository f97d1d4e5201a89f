"""Base model for Kubernetes API objects: camelCase on the wire, snake_case in Python.

Field docstrings become the CRD's OpenAPI descriptions, so `kubectl explain workspace.resource`
shows the same text as the code.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """A part of a Kubernetes object, serialized with camelCase keys."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        # The apiserver has already validated and pruned what it returns; a field added by a newer
        # CRD version must not make an older service fail to read the object.
        extra="ignore",
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the apiserver expects it: camelCase keys, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
