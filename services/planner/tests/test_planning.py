# ruff: noqa: E501 - the table of cases reads best one case per line
"""The planner's choices, checked against numbers worked out by hand in docs/planning.md.

Every expected SKU, node count, TP, dtype and max-model-len below comes from the catalog numbers
and the formulas in docs/planning.md (case numbers match its table), not from running the code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pytest

from kairyu_contracts.api import parse_workspace
from kairyu_contracts.catalog import Cloud, load_catalog
from kairyu_planner.planning import PlanError, PlanReason, plan_workspace
from kairyu_planner.settings import PlanningSettings
from kairyu_testing.seeds import seed

CATALOG = load_catalog()
AZURE = PlanningSettings()
AWS = PlanningSettings(cloud=Cloud.AWS)


def inference(preset: str, sku: str | None, **annotations: str) -> dict[str, Any]:
    doc = seed("inference")
    doc["inference"]["preset"]["name"] = preset
    if sku is None:
        del doc["resource"]["instanceType"]
    else:
        doc["resource"]["instanceType"] = sku
    if annotations:
        doc["metadata"]["annotations"] = annotations
    return doc


@dataclass(frozen=True)
class Case:
    preset: str
    sku: str | None
    expect_sku: str
    nodes: int
    tp: int
    dtype: str
    max_len: int
    settings: PlanningSettings = AZURE


FITS = {
    1: Case("phi-3-mini-4k-instruct", "Standard_NC6s_v3", "Standard_NC6s_v3", 1, 1, "float16", 4096),
    2: Case("phi-3-mini-128k-instruct", "Standard_NC6s_v3", "Standard_NC6s_v3", 1, 1, "float16", 13568),
    3: Case("phi-3-mini-128k-instruct", "Standard_NC24ads_A100_v4", "Standard_NC24ads_A100_v4", 1, 1, "bfloat16", 131072),
    4: Case("phi-3.5-mini-instruct", "Standard_NV36ads_A10_v5", "Standard_NV36ads_A10_v5", 1, 1, "bfloat16", 33024),
    7: Case("phi-3-medium-4k-instruct", "Standard_NC24s_v3", "Standard_NC24s_v3", 1, 4, "float16", 4096),
    8: Case("phi-3-medium-128k-instruct", "Standard_NV72ads_A10_v5", "Standard_NV72ads_A10_v5", 1, 2, "bfloat16", 66048),
    9: Case("phi-4", "Standard_NC24ads_A100_v4", "Standard_NC24ads_A100_v4", 1, 1, "bfloat16", 16384),
    11: Case("phi-4-mini-instruct", "g6.xlarge", "g6.xlarge", 1, 1, "bfloat16", 99328, AWS),
    12: Case("llama-3.1-8b-instruct", "Standard_NC6s_v3", "Standard_NC6s_v3", 2, 1, "float16", 75520),
    13: Case("llama-3.1-8b-instruct", "Standard_NC24ads_A100_v4", "Standard_NC24ads_A100_v4", 1, 1, "bfloat16", 131072),
    14: Case("llama-3.1-8b-instruct", "g5.12xlarge", "g5.12xlarge", 1, 4, "bfloat16", 131072, AWS),
    16: Case("llama-3.3-70b-instruct", "Standard_NC96ads_A100_v4", "Standard_NC96ads_A100_v4", 1, 4, "bfloat16", 131072),
    17: Case("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4", "Standard_NC24ads_A100_v4", 2, 1, "bfloat16", 26112),
    18: Case("llama-3.3-70b-instruct", "Standard_ND96isr_H100_v5", "Standard_ND96isr_H100_v5", 1, 8, "bfloat16", 131072),
    19: Case("llama-3.3-70b-instruct", "g5.48xlarge", "g5.48xlarge", 1, 8, "bfloat16", 75264, AWS),
    21: Case("mistral-7b-instruct", "Standard_NV36ads_A10_v5", "Standard_NV36ads_A10_v5", 1, 1, "bfloat16", 32768),
    23: Case("falcon-7b-instruct", "Standard_NV36ads_A10_v5", "Standard_NV36ads_A10_v5", 1, 1, "bfloat16", 2048),
    25: Case("falcon-40b", "Standard_NC48ads_A100_v4", "Standard_NC48ads_A100_v4", 1, 2, "bfloat16", 2048),
    26: Case("qwen2.5-coder-7b-instruct", "g5.48xlarge", "g5.48xlarge", 1, 4, "bfloat16", 32768, AWS),
    27: Case("qwen2.5-coder-32b-instruct", "Standard_NC24ads_A100_v4", "Standard_NC24ads_A100_v4", 1, 1, "bfloat16", 32768),
    29: Case("deepseek-r1-distill-qwen-14b", "Standard_NV72ads_A10_v5", "Standard_NV72ads_A10_v5", 1, 2, "bfloat16", 60416),
    30: Case("deepseek-r1-distill-llama-8b", "Standard_NC64as_T4_v3", "Standard_NC64as_T4_v3", 1, 4, "float16", 131072),
    31: Case("gemma-3-27b-instruct", "Standard_NC24ads_A100_v4", "Standard_NC24ads_A100_v4", 1, 1, "bfloat16", 23808),
    32: Case("gemma-3-4b-instruct", "Standard_NC4as_T4_v3", "Standard_NC4as_T4_v3", 1, 1, "float16", 10752),
    # No instanceType: the cheapest allowed SKU that fits.
    33: Case("phi-3-mini-4k-instruct", None, "Standard_NC4as_T4_v3", 1, 1, "float16", 4096),
    34: Case("llama-3.3-70b-instruct", None, "Standard_NC48ads_A100_v4", 1, 2, "bfloat16", 26112),
    35: Case("llama-3.1-8b-instruct", None, "Standard_NC4as_T4_v3", 2, 1, "float16", 75520),
    36: Case("falcon-40b-instruct", None, "Standard_NC40ads_H100_v5", 1, 1, "bfloat16", 2048),
    37: Case("phi-3-mini-4k-instruct", None, "g6.xlarge", 1, 1, "bfloat16", 4096, AWS),
    38: Case(
        "llama-3.3-70b-instruct", None, "Standard_NC24ads_A100_v4", 2, 1, "bfloat16", 26112,
        PlanningSettings(allowed_skus=frozenset({"Standard_NC24ads_A100_v4", "standard_nc6s_v3"})),
    ),
}  # fmt: skip

REFUSED = {
    5: ("phi-3-medium-4k-instruct", "Standard_NC6s_v3", "14.3 GiB short"),
    6: ("phi-3-medium-4k-instruct", "Standard_NC12s_v3", "2.2 GiB short"),
    10: ("phi-4", "Standard_NV36ads_A10_v5", "8.4 GiB short"),
    15: ("llama-3.3-70b-instruct", "Standard_NC6s_v3", "it would take 11 nodes"),
    20: ("mistral-7b", "Standard_NC4as_T4_v3", "1.6 GiB short"),
    22: ("falcon-7b", "Standard_NC12s_v3", "1.4 GiB short"),
    24: ("falcon-40b", "Standard_NC24ads_A100_v4", "8.4 GiB short"),
    28: ("qwen2.5-coder-32b-instruct", "Standard_NV72ads_A10_v5", "22.9 GiB short"),
}


@pytest.mark.parametrize("number", sorted(FITS))
def test_plans_match_the_hand_worked_cases(number: int) -> None:
    case = FITS[number]
    ws = parse_workspace(inference(case.preset, case.sku))
    plan = plan_workspace(ws, CATALOG, case.settings).plan
    got = (plan.instance_type, plan.node_count, plan.tensor_parallel_size, plan.dtype)
    assert got == (case.expect_sku, case.nodes, case.tp, case.dtype)
    assert plan.pipeline_parallel_size == case.nodes
    assert plan.max_model_len == case.max_len
    assert f"--max-model-len={case.max_len}" in (plan.runtime_args or [])
    assert f"--tensor-parallel-size={case.tp}" in (plan.runtime_args or [])


@pytest.mark.parametrize("number", sorted(REFUSED))
def test_specs_that_do_not_fit_name_the_shortfall(number: int) -> None:
    preset, sku, shortfall = REFUSED[number]
    with pytest.raises(PlanError) as caught:
        plan_workspace(parse_workspace(inference(preset, sku)), CATALOG, AZURE)
    assert caught.value.reason == PlanReason.INSUFFICIENT_GPU_MEMORY
    assert preset in caught.value.message
    assert shortfall in caught.value.message


def test_the_seed_plan_is_complete() -> None:
    plan = plan_workspace(parse_workspace(seed("inference")), CATALOG, AZURE).plan
    assert plan.estimated_cost_per_hour == "3.06"
    assert plan.gpus_per_node == 1
    assert plan.runtime == "vllm"
    assert "--model=microsoft/Phi-3-mini-4k-instruct" in (plan.runtime_args or [])
    assert "float16 because NVIDIA V100" in (plan.reason or "")


def test_an_automatic_choice_says_why_and_what_came_next() -> None:
    plan = plan_workspace(
        parse_workspace(inference("llama-3.3-70b-instruct", None)), CATALOG, AZURE
    ).plan
    assert plan.estimated_cost_per_hour == "7.35"
    assert "cheapest of" in (plan.reason or "")
    assert "next: 2 x Standard_NC24ads_A100_v4 at $7.35/h" in (plan.reason or "")
    assert "max-model-len clamped to 26112 of the model's 131072 tokens" in (plan.reason or "")


def test_a_multi_node_plan_runs_vllm_with_pipeline_parallelism_over_ray() -> None:
    plan = plan_workspace(
        parse_workspace(inference("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4")),
        CATALOG,
        AZURE,
    ).plan
    assert "--pipeline-parallel-size=2" in (plan.runtime_args or [])
    assert "--distributed-executor-backend=ray" in (plan.runtime_args or [])


def test_transformers_cannot_span_nodes() -> None:
    doc = inference(
        "llama-3.1-8b-instruct", "Standard_NC6s_v3", **{"kaito.sh/runtime": "transformers"}
    )
    with pytest.raises(PlanError) as caught:
        plan_workspace(parse_workspace(doc), CATALOG, AZURE)
    assert caught.value.reason == PlanReason.MULTI_NODE_NOT_SUPPORTED
    assert "not supported with Huggingface Transformers runtime" in caught.value.message


def test_bypass_annotation_turns_a_shortfall_into_a_warning() -> None:
    doc = inference(
        "phi-4", "Standard_NV36ads_A10_v5", **{"kaito.sh/bypass-resource-checks": "True"}
    )
    result = plan_workspace(parse_workspace(doc), CATALOG, AZURE)
    assert result.plan.instance_type == "Standard_NV36ads_A10_v5"
    assert result.warnings
    assert "8.4 GiB short" in result.warnings[0]


@pytest.mark.parametrize(
    ("preset", "sku", "reason"),
    [
        ("no-such-model", "Standard_NC6s_v3", PlanReason.UNKNOWN_PRESET),
        ("phi-3-mini-4k-instruct", "Standard_NC999_v9", PlanReason.UNSUPPORTED_INSTANCE_TYPE),
        ("phi-3-mini-4k-instruct", "g5.xlarge", PlanReason.UNSUPPORTED_INSTANCE_TYPE),
    ],
)
def test_unknown_names_are_refused_with_a_reason(preset: str, sku: str, reason: PlanReason) -> None:
    with pytest.raises(PlanError) as caught:
        plan_workspace(parse_workspace(inference(preset, sku)), CATALOG, AZURE)
    assert caught.value.reason == reason


def test_no_allowed_sku_fits() -> None:
    settings = PlanningSettings(allowed_skus=frozenset({"Standard_NC6s_v3"}))
    with pytest.raises(PlanError) as caught:
        plan_workspace(parse_workspace(inference("phi-4", None)), CATALOG, settings)
    assert caught.value.reason == PlanReason.NO_SUITABLE_SKU
    assert "Standard_NC6s_v3" in caught.value.message


def test_tuning_plans_one_node_and_warns_below_kaitos_recommendation() -> None:
    result = plan_workspace(parse_workspace(seed("tuning")), CATALOG, AZURE)
    assert (result.plan.node_count, result.plan.dtype) == (1, "float16")
    assert any("KAITO recommends 72 GiB" in w for w in result.warnings)


def test_tuning_a_preset_that_cannot_be_tuned_is_refused() -> None:
    doc = seed("tuning")
    doc["tuning"]["preset"]["name"] = "llama-3.1-8b-instruct"
    with pytest.raises(PlanError) as caught:
        plan_workspace(parse_workspace(doc), CATALOG, AZURE)
    assert caught.value.reason == PlanReason.TUNING_NOT_SUPPORTED


def template_workspace(count: int, sku: str = "Standard_NC6s_v3") -> dict[str, Any]:
    doc = inference("phi-3-mini-4k-instruct", sku)
    del doc["inference"]["preset"]
    doc["inference"]["template"] = {"spec": {"containers": [{"name": "x", "image": "x"}]}}
    doc["resource"]["count"] = count
    return doc


def test_a_template_plan_is_held_to_the_node_limit() -> None:
    with pytest.raises(PlanError) as caught:
        plan_workspace(parse_workspace(template_workspace(9)), CATALOG, AZURE)
    assert caught.value.reason == PlanReason.NODE_LIMIT_EXCEEDED
    assert "9 x Standard_NC6s_v3, more than the limit of 4 nodes" in caught.value.message


def test_the_bypass_annotation_does_not_lift_the_node_limit() -> None:
    doc = inference(
        "phi-4", "Standard_NV36ads_A10_v5", **{"kaito.sh/bypass-resource-checks": "True"}
    )
    doc["resource"]["count"] = 50
    with pytest.raises(PlanError) as caught:
        plan_workspace(parse_workspace(doc), CATALOG, AZURE)
    assert caught.value.reason == PlanReason.NODE_LIMIT_EXCEEDED


def test_the_cost_ceiling_refuses_a_dearer_plan_and_keeps_a_cheaper_one() -> None:
    ceiling = PlanningSettings(max_cost_per_hour=5.0)
    # 2 x Standard_NC6s_v3 at $3.06/h each: $6.12/h.
    with pytest.raises(PlanError) as caught:
        plan_workspace(parse_workspace(template_workspace(2)), CATALOG, ceiling)
    assert caught.value.reason == PlanReason.COST_LIMIT_EXCEEDED
    assert "$6.12/h" in caught.value.message
    assert "ceiling of $5.00/h" in caught.value.message
    result = plan_workspace(parse_workspace(template_workspace(1)), CATALOG, ceiling)
    assert result.plan.estimated_cost_per_hour == "3.06"


def test_replicas_multiply_a_single_node_plan_and_its_cost() -> None:
    one = plan_workspace(parse_workspace(inference("phi-3-mini-4k-instruct", None)), CATALOG, AZURE)
    doc = inference("phi-3-mini-4k-instruct", None)
    doc["spec"] = {"replicas": 3}
    three = plan_workspace(parse_workspace(doc), CATALOG, AZURE).plan
    assert (three.instance_type, three.node_count, three.replicas) == (
        one.plan.instance_type,
        3,
        3,
    )
    assert float(three.estimated_cost_per_hour or 0) == pytest.approx(
        3 * float(one.plan.estimated_cost_per_hour or 0), abs=0.011
    )
    assert three.runtime_args == one.plan.runtime_args  # each replica runs the same server
    assert three.content_digest() != one.plan.content_digest()  # other nodes: another plan
    assert "3 replicas" in (three.reason or "")


def test_a_single_replica_keeps_the_digest_plans_had_before_replicas_existed() -> None:
    result = plan_workspace(parse_workspace(inference("phi-4", None)), CATALOG, AZURE)
    body = result.plan.model_dump(
        mode="json",
        include={
            "instance_type",
            "node_count",
            "gpus_per_node",
            "tensor_parallel_size",
            "pipeline_parallel_size",
            "dtype",
            "runtime",
            "max_model_len",
            "runtime_args",
        },
    )
    old = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    assert result.plan.content_digest() == old


def test_replicas_of_a_model_spanning_nodes_are_refused_with_the_reason() -> None:
    doc = inference("llama-3.1-8b-instruct", "Standard_NC6s_v3")  # 2 nodes per replica
    doc["spec"] = {"replicas": 2}
    with pytest.raises(PlanError) as caught:
        plan_workspace(parse_workspace(doc), CATALOG, AZURE)
    assert caught.value.reason == PlanReason.REPLICAS_NOT_SUPPORTED
    assert "spans 2 nodes" in caught.value.message


def test_replicas_are_held_to_the_node_limit() -> None:
    doc = inference("phi-3-mini-4k-instruct", None)
    doc["spec"] = {"replicas": 5}
    with pytest.raises(PlanError) as caught:
        plan_workspace(parse_workspace(doc), CATALOG, AZURE)
    assert caught.value.reason == PlanReason.NODE_LIMIT_EXCEEDED
