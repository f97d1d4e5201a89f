"""The tuner's pure parts: the Job KAITO would build, the config checks, and the status mapping."""

from __future__ import annotations

from typing import Any

import pytest

from kairyu_contracts.api import Plan
from kairyu_contracts.catalog import load_catalog
from kairyu_contracts.tuning import TrainingConfigError
from kairyu_contracts.workloads import Owner, redact_urls, refused_creation
from kairyu_tuner import tuning_manifests
from kairyu_tuner.settings import JobSettings
from kairyu_tuner.training_config import check, default_config
from kairyu_tuner.tuning_status import tuning_status

SETTINGS = JobSettings()
PHI = load_catalog().preset("phi-3-mini-4k-instruct")
OWNER = Owner("ml", "tune", "u-1", "kaito.sh/v1beta1", "Workspace")


def tuning(**overrides: Any) -> tuning_manifests.Tuning:
    assert PHI is not None
    plan = Plan.model_validate(
        {
            "instance_type": "Standard_NC24ads_A100_v4",
            "node_count": 1,
            "gpus_per_node": 2,
            "tensor_parallel_size": 1,
            "pipeline_parallel_size": 1,
            "dtype": "bfloat16",
            "runtime": "transformers",
        }
    )
    values: dict[str, Any] = {
        "owner": OWNER,
        "plan": plan,
        "worker_nodes": ["gpu-1"],
        "preset": PHI,
        "method": "LoRA",
        "urls": ["https://example.com/data.parquet"],
        "output_image": "registry.example.com/adapters/phi:1",
        "push_secret": "push",
    }
    return tuning_manifests.Tuning(**(values | overrides))


def container(job: dict[str, Any]) -> dict[str, Any]:
    (tuner,) = job["spec"]["template"]["spec"]["containers"]
    return dict(tuner)


def test_one_process_per_gpu_then_push_only_after_success() -> None:
    script = tuning_manifests.command(tuning())
    train, push = script.split(" && ")
    assert train.startswith("accelerate launch --num_processes=2 -m kairyu_tuning.train ")
    assert "--method=lora" in train
    assert push.startswith("python3 -m kairyu_tuning.push --image=registry.example.com/")
    assert "--docker-config=/mnt/push-secret/.dockerconfigjson" in push


def test_a_volume_output_is_the_results_volume_and_nothing_is_pushed() -> None:
    job = tuning_manifests.job(
        tuning(
            output_image=None,
            push_secret=None,
            output_volume={"persistentVolumeClaim": {"claimName": "out"}},
        ),
        SETTINGS,
    )
    assert "kairyu_tuning.push" not in container(job)["command"][2]
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["results-volume"]["persistentVolumeClaim"] == {"claimName": "out"}
    assert "push-secret" not in volumes


def test_an_image_input_is_pulled_into_the_data_volume() -> None:
    job = tuning_manifests.job(tuning(urls=[], input_image="registry.example.com/data:1"), SETTINGS)
    (puller,) = job["spec"]["template"]["spec"]["initContainers"]
    assert puller["name"] == "data-puller"
    assert "skopeo copy docker://registry.example.com/data:1" in puller["command"][2]
    assert "cp -r /tmp/rootfs/data/. /mnt/data/" in puller["command"][2]


def test_phi3_gets_kaitos_target_modules_and_the_gpu_placement() -> None:
    job = tuning_manifests.job(tuning(), SETTINGS)
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    assert env["DEFAULT_TARGET_MODULES"].startswith("k_proj,q_proj")
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["gpu-1"]
    assert job["spec"]["backoffLimit"] == 0


def test_the_spec_digest_changes_with_what_the_job_runs() -> None:
    first = tuning_manifests.job(tuning(), SETTINGS)["metadata"]["annotations"]
    again = tuning_manifests.job(tuning(), SETTINGS)["metadata"]["annotations"]
    other = tuning_manifests.job(tuning(method="qlora"), SETTINGS)["metadata"]["annotations"]
    assert first == again
    assert first != other


def test_default_configs_pass_their_own_checks() -> None:
    assert check(default_config("lora"), "lora") == "/mnt/results"
    assert check(default_config("qlora"), "qlora") == "/mnt/results"
    assert "load_in_4bit: false" in default_config("lora")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("training_config: [", "not YAML"),
        ("something: else", "needs a training_config"),
        ("training_config:\n  Bogus: {}\n", "Bogus"),
        ("training_config:\n  LoraConfig:\n    lora_dropout: 1.5\n", "LoraConfig.lora_dropout"),
        ("training_config:\n  DatasetConfig:\n    dataset_extension: xlsx\n", "dataset_extension"),
        ("training_config:\n  TrainingArguments:\n    output_dir: out\n", "absolute path"),
    ],
)
def test_bad_configs_are_explained(text: str, message: str) -> None:
    with pytest.raises(TrainingConfigError, match=message):
        check(text, "lora")


def test_qlora_needs_quantization() -> None:
    with pytest.raises(TrainingConfigError, match=r"qlora needs QuantizationConfig\.load_in_4bit"):
        check(default_config("lora"), "qlora")


def _job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "tune"}, "status": status}


def _pod(phase: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "tune-x", "creationTimestamp": "2026-11-24T00:00:00Z"},
        "spec": {"nodeName": "gpu-1"},
        "status": {"phase": phase, **status},
    }


def test_status_follows_kaitos_mapping() -> None:
    pending = tuning_status(_job(active=1), [_pod("Pending")])
    assert (pending.job_started.status, pending.job_started.reason) == (False, "workspacePending")

    running = tuning_status(_job(active=1, ready=1), [_pod("Running")])
    assert running.job_started.status
    assert running.job_started.message == "the tuning job is running on gpu-1"
    assert running.succeeded.reason == "workspacePending"

    done = tuning_status(_job(succeeded=1, conditions=[{"type": "Complete", "status": "True"}]), [])
    assert done.succeeded.status
    assert done.job_started.reason == "WorkspaceTuningJobStatusStarted"


def test_a_failed_job_names_its_pods_problem() -> None:
    oom = _pod(
        "Failed",
        containerStatuses=[
            {"name": "tuning", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
        ],
    )
    failed = tuning_status(
        _job(
            failed=1,
            conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
        ),
        [oom],
    )
    assert failed.job_started.reason == "WorkspaceTuningJobStatusFailed"
    assert failed.succeeded.reason == "workspaceFailed"
    assert "ContainerOOMKilled" in failed.succeeded.message
    assert "container tuning" in failed.succeeded.message


def test_a_pod_that_cannot_start_says_why() -> None:
    stuck = _pod(
        "Pending",
        containerStatuses=[
            {
                "name": "tuning",
                "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}},
            }
        ],
    )
    result = tuning_status(_job(active=1), [stuck])
    assert (result.job_started.status, result.job_started.reason) == (False, "ImagePullError")
    assert "not found" in result.job_started.message


def test_the_job_runs_non_root_restricted_bounded_and_with_a_deadline() -> None:
    settings = JobSettings(active_deadline_s=3600)
    job = tuning_manifests.job(tuning(), settings)
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    spec = job["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    context = spec["securityContext"]
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert (context["runAsNonRoot"], context["runAsUser"], context["fsGroup"]) == (True, 1000, 1000)
    for c in spec["containers"] + spec["initContainers"]:
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
        }
    limits = {v["name"]: v["emptyDir"].get("sizeLimit") for v in spec["volumes"] if "emptyDir" in v}
    assert limits == {
        "dshm": "32Gi",
        "model-weights-volume": limits["model-weights-volume"],
        "data-volume": "20Gi",  # the 10 GiB download cap plus the scratch headroom
        "results-volume": "10Gi",
    }
    assert limits["model-weights-volume"]
    assert JobSettings().active_deadline_s == 86_400


def test_signed_url_tokens_are_redacted_from_messages() -> None:
    message = (
        "container data-downloader exited 1: GET "
        "https://acct.blob.core.windows.net/data/train.parquet?sv=2024&sig=c2VjcmV0 returned 403"
    )
    assert redact_urls(message) == (
        "container data-downloader exited 1: GET "
        "https://acct.blob.core.windows.net/data/train.parquet?REDACTED returned 403"
    )
    assert redact_urls("no url here?x=1") == "no url here?x=1"


def test_the_latest_failed_create_event_says_why_a_job_has_no_pod() -> None:
    events = [
        {
            "reason": "SuccessfulCreate",
            "message": "created",
            "lastTimestamp": "2026-01-01T00:00:09Z",
        },
        {"reason": "FailedCreate", "message": "old", "lastTimestamp": "2026-01-01T00:00:01Z"},
        {"reason": "FailedCreate", "message": "forbidden", "lastTimestamp": "2026-01-01T00:00:05Z"},
    ]
    assert refused_creation(events) == "forbidden"
    assert refused_creation(events[:1]) is None
