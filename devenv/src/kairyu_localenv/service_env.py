"""The environment that sets a service's settings, named from the settings models themselves.

`make dev`, the chaos test and the benchmarks start the services as processes and configure them
the way the chart does, through `KAIRYU_*` variables. The names are not written out here:
`env_of(PlannerSettings, planning={"node_provisioner": "byo"})` finds the field in the planner's
own model and spells its variable with the model's prefix and nesting delimiter. A field that is
renamed or moved then fails when the environment is built, instead of being ignored by the
service. The dependency on the services' settings is also an import that import-linter sees.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_settings import BaseSettings


def env_of(settings: type[BaseSettings], **values: Any) -> dict[str, str]:
    """`KAIRYU_*` variables setting `values` (nested mappings for nested models) in `settings`."""
    prefix = str(settings.model_config.get("env_prefix") or "")
    delimiter = str(settings.model_config.get("env_nested_delimiter") or "__")
    env: dict[str, str] = {}

    def collect(model: type[BaseModel], given: Mapping[str, Any], path: tuple[str, ...]) -> None:
        for name, value in given.items():
            field = model.model_fields.get(name)
            if field is None:
                raise KeyError(f"{'.'.join((settings.__name__, *path, name))}: no such setting")
            if isinstance(value, Mapping):
                nested = _model_of(field.annotation)
                if nested is None:
                    raise TypeError(f"{model.__name__}.{name} is not a nested model")
                collect(nested, value, (*path, name))
            else:
                env[prefix + delimiter.join((*path, name)).upper()] = str(value)

    collect(settings, values, ())
    return env


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model type of a field annotated `Model` or `Model | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None
