"""KAITO's semantic rules, without a cluster."""

import copy
from typing import Any

import pytest

from kairyu_contracts.api import WorkspaceV1Alpha1, WorkspaceV1Beta1
from kairyu_contracts.catalog import Cloud
from kairyu_planner.settings import PlanningSettings
from kairyu_planner.validation import Verdict, unsafe_url_reason, validate
from kairyu_planner.webhook import review
from kairyu_testing.seeds import seed


def ws(doc: dict[str, Any]) -> WorkspaceV1Alpha1:
    return WorkspaceV1Alpha1.model_validate(doc)


@pytest.mark.parametrize("name", ["inference", "tuning", "adapter"])
def test_the_seed_manifests_pass(name: str) -> None:
    verdict = validate(ws(seed(name)))
    assert verdict.allowed, verdict.errors


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("https://huggingface.co/datasets/x/resolve/main/a.parquet", False),
        ("http://93.184.216.34/data.jsonl", False),
        ("http://127.0.0.1/data", True),
        ("http://localhost:8080/data", True),
        ("http://10.1.2.3/data", True),
        ("http://192.168.0.10/data", True),
        ("http://172.16.5.4/data", True),
        ("http://169.254.169.254/latest/meta-data", True),
        ("http://[::1]/data", True),
        ("http://[fd00::1]/data", True),
        ("http://metadata.google.internal/computeMetadata", True),
        ("http://0.0.0.0/data", True),
    ],
)
def test_tuning_input_urls_may_not_reach_local_private_or_metadata_addresses(
    url: str, refused: bool
) -> None:
    assert (unsafe_url_reason(url) is not None) == refused
    doc = seed("tuning")
    doc["tuning"]["input"]["urls"] = [url]
    verdict = validate(ws(doc))
    assert verdict.allowed is not refused
    if refused:
        assert verdict.errors[0].startswith("tuning.input.urls[0]: ")


def test_non_http_schemes_are_refused() -> None:
    assert (
        unsafe_url_reason("ftp://example.com/data")
        == "only http and https URLs are allowed, not 'ftp'"
    )
    assert unsafe_url_reason("file:///etc/passwd") is not None


def changed(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return doc


@pytest.mark.parametrize(
    ("base", "path", "value", "message"),
    [
        ("inference", "inference.preset.name", "phi-4", "field is immutable: inference.preset"),
        (
            "inference",
            "resource.labelSelector.matchLabels",
            {"apps": "other"},
            "field is immutable: resource.labelSelector",
        ),
        (
            "inference",
            "resource.instanceType",
            "Standard_NC24ads_A100_v4",
            "field is immutable: resource.instanceType",
        ),
        ("inference", "resource.count", 2, "field is immutable: resource.count"),
        (
            "inference",
            "inference.template",
            {"spec": {}},
            "field cannot be unset/set if it was set/unset: inference.template",
        ),
        ("tuning", "tuning.method", "lora", "field is immutable: tuning.method"),
        ("tuning", "tuning.preset.name", "phi-4", "field is immutable: tuning.preset"),
        ("tuning", "tuning.input.name", "other-data", "field is immutable: tuning.input.name"),
    ],
)
def test_immutable_fields_cannot_change_on_update(
    base: str, path: str, value: Any, message: str
) -> None:
    old = seed(base)
    verdict = validate(ws(changed(old, path, value)), ws(old))
    assert message in verdict.errors


def test_allowed_updates_pass() -> None:
    old = seed("adapter")
    new = changed(
        old, "inference.adapters", [{"source": {"name": "other", "image": "example.com/b:1"}}]
    )
    assert validate(ws(new), ws(old)).allowed
    assert validate(ws(changed(old, "resource.instanceType", None)), ws(old)).allowed, (
        "clearing is BYO"
    )


def test_toggling_inference_to_tuning_is_refused() -> None:
    old, new = seed("inference"), seed("tuning")
    assert validate(ws(new), ws(old)).errors == [
        "inference and tuning cannot be toggled on or off after creation"
    ]


def test_annotations_and_selectors() -> None:
    doc = seed("inference")
    doc["metadata"]["annotations"] = {
        "kaito.sh/runtime": "tensorrt",
        "kaito.sh/performance-mode": "fast",
    }
    errors = validate(ws(doc)).errors
    assert any("kaito.sh/runtime" in e for e in errors)
    assert any("kaito.sh/performance-mode" in e for e in errors)

    doc = seed("inference")
    doc["resource"]["labelSelector"] = {"matchLabels": {"kaito.sh/workspace": "x", "apps": "phi-3"}}
    verdict = validate(ws(doc))
    assert verdict.allowed
    assert "reserved label keys ['kaito.sh/workspace']" in verdict.warnings[0]
    doc["resource"]["labelSelector"] = {"matchLabels": {"kaito.sh/workspace": "x"}}
    assert not validate(ws(doc)).allowed
    doc["resource"]["labelSelector"] = {"matchExpressions": [{"key": "a", "operator": "Exists"}]}
    assert validate(ws(doc)).errors == [
        "Only allow matchLabels or 'IN' matchExpression: resource.labelSelector"
    ]


def test_vllm_refuses_partial_adapter_strength_but_transformers_takes_it() -> None:
    doc = seed("adapter")
    doc["inference"]["adapters"][0]["strength"] = "0.5"
    assert "vLLM does not support adapter strength" in validate(ws(doc)).errors[0]
    doc["metadata"]["annotations"] = {"kaito.sh/runtime": "transformers"}
    assert validate(ws(doc)).allowed


def test_tuning_is_single_node() -> None:
    doc = changed(seed("tuning"), "resource.count", 2)
    assert (
        "Tuning does not currently support multinode configurations: resource.count"
        in validate(ws(doc)).errors
    )


def test_review_answers_in_admission_review_form() -> None:
    old = seed("inference")
    new = changed(old, "inference.preset.name", "phi-4")
    answer = review(
        {"request": {"uid": "42", "operation": "UPDATE", "object": new, "oldObject": old}}
    )
    assert answer["response"]["uid"] == "42"
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["message"] == "field is immutable: inference.preset"
    garbage = review(
        {"request": {"uid": "43", "operation": "CREATE", "object": {"kind": "Workspace"}}}
    )
    assert garbage["response"]["allowed"] is False
    assert "cannot read the Workspace" in garbage["response"]["status"]["message"]


def test_an_unknown_instance_type_gets_kaitos_message() -> None:
    doc = seed("inference")
    doc["resource"]["instanceType"] = "m5.large"
    verdict = validate(ws(doc))
    assert verdict.errors[0].startswith("Unsupported instance type m5.large. Supported SKUs:")


def test_an_unlisted_azure_gpu_sku_is_admitted_with_a_warning_as_kaito_does() -> None:
    doc = seed("inference")
    doc["resource"]["instanceType"] = "Standard_NC8ads_A10_v4"
    verdict = validate(ws(doc))
    assert verdict.allowed
    assert "not in kairyu's GPU SKU catalog" in verdict.warnings[0]


def test_an_unknown_preset_is_refused() -> None:
    doc = seed("inference")
    doc["inference"]["preset"]["name"] = "gpt-7"
    assert "Unsupported preset name gpt-7" in validate(ws(doc)).errors[0]


def test_a_gated_model_needs_an_access_secret() -> None:
    doc = seed("inference")
    doc["inference"]["preset"]["name"] = "llama-3.1-8b-instruct"
    assert "modelAccessSecret" in validate(ws(doc)).errors[0]
    doc["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    assert validate(ws(doc)).allowed


def test_not_enough_gpu_memory_is_refused_unless_bypassed() -> None:
    doc = seed("inference")
    doc["inference"]["preset"]["name"] = "phi-4"
    verdict = validate(ws(doc))
    assert not verdict.allowed
    assert "GiB short" in verdict.errors[0]
    doc["metadata"]["annotations"] = {"kaito.sh/bypass-resource-checks": "True"}
    verdict = validate(ws(doc))
    assert verdict.allowed
    assert "GiB short" in verdict.warnings[0]


def test_resource_checks_do_not_block_updates() -> None:
    doc = seed("inference")
    doc["inference"]["preset"]["name"] = "phi-4"
    old = copy.deepcopy(doc)
    doc["metadata"]["labels"] = {"team": "a"}
    assert validate(ws(doc), ws(old)).allowed


def test_lora_adapters_on_a_model_vllm_cannot_adapt_are_refused() -> None:
    doc = seed("adapter")
    doc["inference"]["preset"]["name"] = "falcon-7b-instruct"
    doc["resource"]["instanceType"] = "Standard_NV36ads_A10_v5"
    assert "vLLM does not support LoRA adapters" in validate(ws(doc)).errors[0]


def template_doc(spec: Any) -> dict[str, Any]:
    doc = seed("inference")
    del doc["inference"]["preset"]
    doc["inference"]["template"] = {"metadata": {"labels": {"app": "x"}}, "spec": spec}
    return doc


_CONTAINER = {"name": "server", "image": "example.com/server:1"}
_SYS_ADMIN = {"add": ["SYS_ADMIN"]}
_HOST_ROOT = {"name": "root", "hostPath": {"path": "/"}}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"containers": [_CONTAINER], "volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
            "volume type hostPath is not allowed",
        ),
        ({"containers": [_CONTAINER], "hostNetwork": True}, "hostNetwork is not allowed"),
        ({"containers": [_CONTAINER], "hostPID": True}, "hostPID is not allowed"),
        ({"containers": [_CONTAINER], "hostIPC": True}, "hostIPC is not allowed"),
        (
            {"containers": [{**_CONTAINER, "securityContext": {"privileged": True}}]},
            "privileged is not allowed",
        ),
        (
            {"containers": [{**_CONTAINER, "securityContext": {"capabilities": _SYS_ADMIN}}]},
            "capabilities.add ['SYS_ADMIN'] is not allowed",
        ),
        (
            {"containers": [{**_CONTAINER, "ports": [{"containerPort": 80, "hostPort": 80}]}]},
            "hostPort is not allowed",
        ),
        ("not an object", "inference.template.spec must be an object"),
        ({"containers": "x"}, "inference.template.spec.containers must be a list of objects"),
        ({"containers": []}, "must name at least one container"),
    ],
)  # fmt: skip
def test_templates_that_reach_into_the_node_or_cannot_be_built_are_refused(
    spec: Any, message: str
) -> None:
    verdict = validate(ws(template_doc(spec)))
    assert not verdict.allowed
    assert any(message in e for e in verdict.errors), verdict.errors


def test_the_admin_may_allow_host_access_but_never_a_broken_template() -> None:
    allowed = PlanningSettings(allow_host_access=True)
    spec = {"containers": [_CONTAINER], "hostNetwork": True, "volumes": [_HOST_ROOT]}
    assert validate(ws(template_doc(spec)), planning=allowed).allowed
    assert not validate(ws(template_doc("x")), planning=allowed).allowed


@pytest.mark.parametrize(
    ("path", "source", "allowed"),
    [
        (("tuning", "input"), {"hostPath": {"path": "/var/lib/kubelet"}}, False),
        (("tuning", "output"), {"nfs": {"server": "10.0.0.1", "path": "/"}}, False),
        (("tuning", "output"), {"persistentVolumeClaim": {"claimName": "out"}}, True),
        (("tuning", "output"), {"emptyDir": {}, "hostPath": {"path": "/"}}, False),
    ],
)
def test_volume_sources_are_held_to_the_restricted_list(
    path: tuple[str, str], source: dict[str, Any], allowed: bool
) -> None:
    doc = seed("tuning")
    target = doc[path[0]][path[1]]
    for key in ("urls", "image", "imagePushSecret"):
        target.pop(key, None)
    target["volumeSource"] = source
    verdict = validate(ws(doc))
    assert verdict.allowed is allowed, verdict.errors


def test_an_update_checks_immutability_and_safety_only() -> None:
    old = ws(seed("inference"))
    new_doc = seed("inference")
    new_doc["metadata"]["annotations"] = {"kaito.sh/runtime": "not-a-runtime"}
    # The settings changed since creation (another cloud): the update is still admitted.
    assert validate(ws(new_doc), old, planning=PlanningSettings(cloud=Cloud.AWS)).allowed
    spec = {"containers": [_CONTAINER]}
    old_t = ws(template_doc(spec))
    bad = template_doc({**spec, "hostPID": True})
    assert not validate(ws(bad), old_t).allowed


def test_review_admits_metadata_only_updates_without_validating_deleting_or_not() -> None:
    def refuse_all(new: Any, old: Any) -> Verdict:
        return Verdict(errors=["refused"])

    obj = seed("inference")
    changed = copy.deepcopy(obj)
    changed["metadata"]["finalizers"] = []
    request = {"request": {"uid": "1", "operation": "UPDATE", "object": changed, "oldObject": obj}}
    assert review(request, refuse_all)["response"]["allowed"] is True
    spec_change = copy.deepcopy(obj)
    spec_change["inference"]["preset"]["name"] = "phi-4"
    request["request"]["object"] = spec_change
    assert review(request, refuse_all)["response"]["allowed"] is False
    # Being deleted does not exempt a spec change from the UPDATE checks (its pods live on
    # while a finalizer holds it), but finalizer removal still passes.
    spec_change["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert review(request, refuse_all)["response"]["allowed"] is False
    changed["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    request["request"]["object"] = changed
    assert review(request, refuse_all)["response"]["allowed"] is True


def test_resource_count_is_held_to_the_node_limit() -> None:
    doc = template_doc({"containers": [_CONTAINER]})
    doc["resource"]["count"] = 5
    verdict = validate(ws(doc), planning=PlanningSettings(max_nodes=4))
    assert any("resource.count 5 is more than the limit of 4" in e for e in verdict.errors)
    doc["resource"]["count"] = 100_000
    with pytest.raises(ValueError, match="less than or equal to 100"):
        ws(doc)


def test_a_plan_over_the_cost_ceiling_is_refused_at_admission() -> None:
    verdict = validate(ws(seed("inference")), planning=PlanningSettings(max_cost_per_hour=1.0))
    assert any("more than the ceiling of $1.00/h" in e for e in verdict.errors), verdict.errors


def test_a_deprecated_falcon_preset_is_admitted_with_a_warning() -> None:
    doc = seed("inference")
    doc["inference"]["preset"]["name"] = "falcon-7b-instruct"
    doc["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
    verdict = validate(WorkspaceV1Alpha1.model_validate(doc))
    assert verdict.allowed
    assert any("deprecated" in w for w in verdict.warnings)


def test_a_hugging_face_id_is_admitted_with_a_warning_and_no_resource_check() -> None:
    doc = seed("inference")
    doc["inference"]["preset"]["name"] = "unsloth/Llama-3.1-8B-Instruct"
    verdict = validate(WorkspaceV1Alpha1.model_validate(doc))
    assert verdict.allowed
    assert any("sizes it from the Hugging Face Hub" in w for w in verdict.warnings)
    doc["inference"]["preset"]["name"] = "not a model"
    assert not validate(WorkspaceV1Alpha1.model_validate(doc)).allowed


def test_v1beta1_deprecated_fields_are_accepted_with_kaito_s_warnings() -> None:
    doc = seed("inference")
    doc["apiVersion"] = "kaito.sh/v1beta1"
    doc["resource"]["count"] = 1
    doc["resource"]["preferredNodes"] = ["node-a"]
    verdict = validate(WorkspaceV1Beta1.model_validate(doc))
    assert verdict.allowed
    assert any("resource.count is deprecated in v1beta1" in w for w in verdict.warnings)
    assert any("resource.preferredNodes is deprecated in v1beta1" in w for w in verdict.warnings)
    doc["apiVersion"] = "kaito.sh/v1alpha1"
    older = validate(WorkspaceV1Alpha1.model_validate(doc))
    assert not any("deprecated" in w for w in older.warnings)


def test_the_node_image_family_annotation_is_read_as_kaito_s_examples_write_it() -> None:
    doc = seed("inference")
    doc["metadata"]["annotations"] = {"kaito.sh/node-image-family": "AzureLinux"}
    assert validate(WorkspaceV1Alpha1.model_validate(doc)).allowed
    doc["metadata"]["annotations"] = {"kaito.sh/node-image-family": "windows"}
    assert not validate(WorkspaceV1Alpha1.model_validate(doc)).allowed
