"""Any Hugging Face model id, sized from the Hub: the real huggingface_hub client against a local
endpoint that speaks the Hub's API (kairyu_testing.fakehub), then planned like a preset."""

from __future__ import annotations

from collections.abc import Iterator

import huggingface_hub
import pytest

from kairyu_contracts.api import parse_workspace
from kairyu_contracts.catalog import load_catalog
from kairyu_contracts.catalog.sizing import SizingError, is_hf_id, preset_from_config
from kairyu_planner.hub import HubModels, HubSettings, HubUnavailableError
from kairyu_planner.planning import plan_workspace
from kairyu_planner.settings import PlanningSettings
from kairyu_testing.fakehub import (
    GATED_1B,
    HUGE_CONFIG,
    LLAMA_8B,
    LLAMA_70B,
    NO_CONFIG,
    QWEN3_AWQ,
    TOKEN,
    FakeHub,
)
from kairyu_testing.seeds import seed

CATALOG = load_catalog()
AZURE = PlanningSettings()


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        yield running
    # The client's pooled connections to the endpoint just closed: close them, not the GC later.
    huggingface_hub.close_session()


def models(hub: FakeHub) -> HubModels:
    return HubModels(HubSettings(endpoint=hub.endpoint), image=CATALOG.base_image)


def workspace(name: str, sku: str | None = None) -> dict[str, object]:
    doc = seed("inference")
    doc["inference"]["preset"]["name"] = name
    if sku is None:
        del doc["resource"]["instanceType"]
    else:
        doc["resource"]["instanceType"] = sku
    return doc


def test_hf_ids_are_told_from_preset_names() -> None:
    assert is_hf_id("unsloth/Llama-3.1-8B-Instruct")
    assert is_hf_id("Qwen/Qwen3-8B-AWQ")
    assert not is_hf_id("phi-3-mini-4k-instruct")
    assert not is_hf_id("a/b/c")
    assert not is_hf_id("../etc")


async def test_the_hub_s_numbers_give_kaito_s_preset_numbers_for_the_same_model(
    hub: FakeHub,
) -> None:
    found = await models(hub).model(LLAMA_70B.repo, "main", None)
    catalog = CATALOG.preset("llama-3.3-70b-instruct")
    assert catalog is not None
    preset = found.preset
    assert found.commit == LLAMA_70B.commit
    assert preset.weights_gib == catalog.weights_gib  # 131.42 GiB over 30 shards
    assert preset.kv_cache.bytes_per_token == catalog.kv_cache.bytes_per_token  # 327680
    assert (preset.token_limit, preset.attention_heads) == (131072, 64)
    assert preset.name == "llama-3.3-70b-instruct"  # served as KAITO names it


async def test_an_hf_id_is_planned_as_its_catalog_twin_would_be(hub: FakeHub) -> None:
    hub_models = models(hub)
    for repo, twin in ((LLAMA_70B, "llama-3.3-70b-instruct"), (LLAMA_8B, "llama-3.1-8b-instruct")):
        found = await hub_models.model(repo.repo, "main", None)
        catalog = CATALOG.with_preset(repo.repo, found.preset)
        planned = plan_workspace(parse_workspace(workspace(repo.repo)), catalog, AZURE).plan
        expected = plan_workspace(parse_workspace(workspace(twin)), CATALOG, AZURE).plan
        assert (planned.instance_type, planned.node_count, planned.tensor_parallel_size) == (
            expected.instance_type,
            expected.node_count,
            expected.tensor_parallel_size,
        )
        assert planned.pipeline_parallel_size == expected.pipeline_parallel_size
        assert f"--model={repo.repo}" in (planned.runtime_args or [])
        assert planned.weights_gib == expected.weights_gib
    big = await hub_models.model(LLAMA_70B.repo, "main", None)
    plan = plan_workspace(
        parse_workspace(workspace(LLAMA_70B.repo, "Standard_NC24ads_A100_v4")),
        CATALOG.with_preset(LLAMA_70B.repo, big.preset),
        AZURE,
    ).plan
    # 131.42 GiB of weights on 80 GiB A100s: 2 nodes, pipeline-parallel (docs/planning.md).
    assert (plan.node_count, plan.pipeline_parallel_size) == (2, 2)


async def test_quantization_is_read_from_the_config(hub: FakeHub) -> None:
    found = await models(hub).model(QWEN3_AWQ.repo, "main", None)
    assert found.preset.quantization == "awq"
    assert found.preset.kv_cache.bytes_per_token == 2 * 8 * 128 * 36 * 2


async def test_a_model_without_config_json_cannot_be_sized(hub: FakeHub) -> None:
    with pytest.raises(SizingError, match=r"no config\.json"):
        await models(hub).model(NO_CONFIG.repo, "main", None)


async def test_unknown_and_gated_models_say_why(hub: FakeHub) -> None:
    with pytest.raises(SizingError, match="no model acme/nothing-here"):
        await models(hub).model("acme/nothing-here", "main", None)
    with pytest.raises(SizingError, match="gated on Hugging Face"):
        await models(hub).model(GATED_1B.repo, "main", None)
    opened = await models(hub).model(GATED_1B.repo, "main", TOKEN)
    assert opened.preset.download_auth_required


async def test_metadata_is_read_once_per_model_and_commit(hub: FakeHub) -> None:
    hub_models = models(hub)
    before = len(hub.requests)
    first = await hub_models.model(LLAMA_8B.repo, "main", None)
    asked = len(hub.requests) - before
    again = await hub_models.model(LLAMA_8B.repo, "main", None)
    by_commit = await hub_models.model(LLAMA_8B.repo, first.commit, None)
    assert again is first
    assert by_commit is first
    assert asked == 2  # model_info and config.json
    assert len(hub.requests) - before == asked


async def test_an_unreachable_hub_is_a_temporary_failure() -> None:
    unreachable = HubModels(HubSettings(endpoint="http://127.0.0.1:9", timeout_s=2), image="x")
    with pytest.raises(HubUnavailableError):
        await unreachable.model(LLAMA_8B.repo, "main", None)


def test_a_config_without_layers_is_refused_naming_the_field() -> None:
    with pytest.raises(SizingError, match="num_hidden_layers"):
        preset_from_config(
            "acme/odd",
            {"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 4096},
            1 << 30,
            image="x",
        )
    with pytest.raises(SizingError, match="architecture"):
        preset_from_config("acme/odd", {"num_hidden_layers": 2}, 1 << 30, image="x")


async def test_a_config_json_larger_than_any_real_one_is_abandoned(hub: FakeHub) -> None:
    with pytest.raises(SizingError, match="larger than"):
        await models(hub).model(HUGE_CONFIG.repo, "main", None)


async def test_a_gated_model_read_with_one_namespace_s_token_is_not_another_s(
    hub: FakeHub,
) -> None:
    hub_models = models(hub)
    mine = await hub_models.model(GATED_1B.repo, "main", TOKEN, "team-a/hf-token")
    assert hub_models.cached(GATED_1B.repo, mine.commit, "team-a/hf-token") is mine
    assert hub_models.cached(GATED_1B.repo, mine.commit, "team-b/hf-token") is None
    with pytest.raises(SizingError, match="gated"):
        await hub_models.model(GATED_1B.repo, "main", None, "team-b/other")
    # An open model is shared: nobody's access is needed to know it.
    open_model = await hub_models.model(LLAMA_8B.repo, "main", None, "")
    assert hub_models.cached(LLAMA_8B.repo, open_model.commit, "team-b/x") is open_model
