"""kairyu's catalog of model presets and GPU SKUs, read once from the YAML files beside it.

Lookups are case-insensitive for SKUs (clouds and KAITO treat `standard_nc6s_v3` and
`Standard_NC6s_v3` as the same) and exact for preset names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from importlib import resources

import yaml

from kairyu_contracts.catalog import sizing
from kairyu_contracts.catalog.models import (
    Cloud,
    CuratedFile,
    GpuSku,
    KvCache,
    Preset,
    PresetFile,
    Price,
    PriceSource,
    Runtime,
    SkuFile,
)
from kairyu_contracts.catalog.sizing import preset_from_config

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
        """A preset by its name, or by the Hugging Face id it serves (KAITO accepts both)."""
        found = self.presets.get(name)
        if found is None and "/" in name:
            found = self._by_repo().get(name.lower())
        return found

    def _by_repo(self) -> dict[str, Preset]:
        return {p.hf_repo.lower(): p for p in self.presets.values()}

    def with_preset(self, key: str, preset: Preset) -> Catalog:
        """This catalog and one more preset under `key` (a model sized from the Hub)."""
        return replace(self, presets={**self.presets, key: preset})

    def sku(self, name: str) -> GpuSku | None:
        return self.skus.get(name.lower())

    def skus_of(self, cloud: Cloud) -> list[GpuSku]:
        return [s for s in self.skus.values() if s.cloud == cloud]

    @classmethod
    def build(
        cls, presets: PresetFile, skus: SkuFile, curated: CuratedFile | None = None
    ) -> Catalog:
        by_name = {p.name: p for p in presets.presets}
        if len(by_name) != len(presets.presets):
            raise ValueError("duplicate preset names in the catalog")
        known = {p.hf_repo.lower() for p in presets.presets}
        for model in curated.models if curated else []:
            if model.repo.lower() in known:
                continue  # a preset: KAITO's preset numbers and runtime flags
            preset = preset_from_config(
                model.repo,
                model.config(),
                int(model.weights_gib * sizing.GIB),
                image=presets.base_image,
                gated=model.gated,
                deprecated=model.deprecated,
            )
            if preset.name in by_name:
                raise ValueError(f"curated model {model.repo} is served as {preset.name}, taken")
            by_name[preset.name] = preset
            known.add(model.repo.lower())
        repos = {p.hf_repo.lower(): p for p in by_name.values()}
        for legacy, repo in (curated.legacy if curated else {}).items():
            if legacy not in by_name:
                by_name[legacy] = repos[repo.lower()]
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
        CuratedFile.model_validate(_read("curated.yaml")),
    )
