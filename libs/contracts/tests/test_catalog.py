"""The shipped catalog loads, is complete, and its schema catches bad numbers."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml
from pydantic import ValidationError

from kairyu_contracts.catalog import Cloud, KvCache, load_catalog

REQUIRED_PRESETS = {
    "phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct", "phi-3-medium-4k-instruct",
    "phi-3-medium-128k-instruct", "phi-3.5-mini-instruct", "phi-4", "phi-4-mini-instruct",
    "llama-3.1-8b-instruct", "llama-3.3-70b-instruct", "mistral-7b", "mistral-7b-instruct",
    "falcon-7b", "falcon-7b-instruct", "falcon-40b", "falcon-40b-instruct",
    "qwen2.5-coder-7b-instruct", "qwen2.5-coder-32b-instruct", "deepseek-r1-distill-llama-8b",
    "deepseek-r1-distill-qwen-14b", "gemma-3-4b-instruct", "gemma-3-27b-instruct",
}  # fmt: skip


def test_every_preset_the_issue_names_is_in_the_catalog() -> None:
    assert set(load_catalog().presets) >= REQUIRED_PRESETS


@pytest.mark.parametrize(
    ("needle", "cloud"),
    [
        ("Standard_NC6s_v3", Cloud.AZURE), ("T4", Cloud.AZURE), ("A10", Cloud.AZURE),
        ("A100", Cloud.AZURE), ("H100", Cloud.AZURE), ("H200", Cloud.AZURE),
        ("g5.", Cloud.AWS), ("g6.", Cloud.AWS), ("p4d.", Cloud.AWS), ("p4de.", Cloud.AWS),
        ("p5.", Cloud.AWS), ("p5e.", Cloud.AWS),
    ],
)  # fmt: skip
def test_every_gpu_family_the_issue_names_has_skus(needle: str, cloud: Cloud) -> None:
    skus = load_catalog().skus_of(cloud)
    assert any(needle in s.name or s.gpu_model.endswith(needle) for s in skus)


def test_prices_cite_a_dated_source() -> None:
    catalog = load_catalog()
    for sku in catalog.skus.values():
        if sku.price is not None:
            assert catalog.price_sources[sku.price.source].as_of.year >= 2026


def test_sku_lookup_ignores_case() -> None:
    catalog = load_catalog()
    sku = catalog.sku("standard_nc6s_v3")
    assert sku is not None
    assert (sku.gpu_count, sku.gpu_memory_gib, sku.bf16) == (1, 16, False)


def test_architecture_numbers_must_agree_with_bytes_per_token() -> None:
    KvCache(bytes_per_token=131072, layers=32, kv_heads=8, head_dim=128)
    with pytest.raises(ValidationError, match="disagrees"):
        KvCache(bytes_per_token=131072, layers=32, kv_heads=4, head_dim=128)
    with pytest.raises(ValidationError, match="give all"):
        KvCache(bytes_per_token=131072, layers=32)


def test_every_model_of_kaito_s_curated_catalog_and_legacy_name_resolves() -> None:
    catalog = load_catalog()
    curated = yaml.safe_load(
        resources.files("kairyu_contracts.catalog").joinpath("curated.yaml").read_text()
    )
    assert len(curated["models"]) == 61  # KAITO's 60 and the legacy phi-2
    for model in curated["models"]:
        preset = catalog.preset(model["repo"])
        assert preset is not None, model["repo"]
        assert preset.hf_repo.lower() == model["repo"].lower()
    for legacy, repo in curated["legacy"].items():
        found = catalog.preset(legacy)
        assert found is not None
        assert found.hf_repo == repo
    # A curated model that is also a preset keeps the preset's (KAITO's) numbers.
    phi4 = catalog.preset("microsoft/phi-4")
    assert phi4 is catalog.preset("phi-4")
    # Multi-head latent attention: 61 layers x (512 + 64) x 2 bytes per token.
    r1 = catalog.preset("deepseek-r1-0528")
    assert r1 is not None
    assert r1.kv_cache.bytes_per_token == 61 * (512 + 64) * 2
    assert r1.quantization == "fp8"


def test_falcon_and_phi_2_are_deprecated_and_llama_and_gemma_gated() -> None:
    catalog = load_catalog()
    deprecated = {n for n, p in catalog.presets.items() if p.deprecated}
    assert deprecated == {
        "falcon-7b",
        "falcon-7b-instruct",
        "falcon-40b",
        "falcon-40b-instruct",
        "phi-2",
    }
    gemma4 = catalog.preset("google/gemma-4-31B-it")
    assert gemma4 is not None
    assert gemma4.download_auth_required
