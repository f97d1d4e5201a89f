"""kairyu's catalog of model presets and GPU SKUs, read once from the YAML files beside it.

Lookups are case-insensitive for SKUs (clouds and KAITO treat `standard_nc6s_v3` and
`Standard_NC6s_v3` as the same) and exact for preset names.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from kairyu_core.catalog.models import (
    Cloud,
    GpuSku,
    KvCache,
    Preset,
    PresetFile,
    Price,
    PriceSource,
    Runtime,
    SkuFile,
)

__all__ = [
    "Catalog",
    "Cloud",
    "GpuSku",
    "KvCache",
    "Preset",
    "Price",
    "PriceSource",
    "Runtime",
    "load_catalog",
]


@dataclass(frozen=True)
class Catalog:
    """Presets and SKUs, indexed for lookup."""

    presets: dict[str, Preset]
    skus: dict[str, GpuSku]
    """Keyed by lower-cased SKU name."""
    price_sources: dict[str, PriceSource]
    base_image: str = ""
    """The runtime image of a model without a preset (a Hugging Face id)."""

    def preset(self, name: str) -> Preset | None:
        return self.presets.get(name)

    def sku(self, name: str) -> GpuSku | None:
        return self.skus.get(name.lower())

    def skus_of(self, cloud: Cloud) -> list[GpuSku]:
        return [s for s in self.skus.values() if s.cloud == cloud]

    @classmethod
    def build(cls, presets: PresetFile, skus: SkuFile) -> Catalog:
        by_name = {p.name: p for p in presets.presets}
        if len(by_name) != len(presets.presets):
            raise ValueError("duplicate preset names in the catalog")
        by_sku = {s.name.lower(): s for s in skus.skus}
        if len(by_sku) != len(skus.skus):
            raise ValueError("duplicate SKU names in the catalog")
        return cls(
            presets=by_name,
            skus=by_sku,
            price_sources=dict(skus.price_sources),
            base_image=presets.base_image,
        )


def _read(name: str) -> object:
    return yaml.safe_load(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))


@cache
def load_catalog() -> Catalog:
    """The catalog shipped with kairyu (parsed and checked on first use)."""
    return Catalog.build(
        PresetFile.model_validate(_read("presets.yaml")),
        SkuFile.model_validate(_read("skus.yaml")),
    )
