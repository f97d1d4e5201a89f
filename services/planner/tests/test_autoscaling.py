"""The ScaledObject an annotated InferenceSet gets (pure): KAITO's annotations, kairyu's, errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from kairyu_core.kube import errors
from kairyu_planner.autoscaling import (
    AutoscalingError,
    load_url,
    scaled_object,
    scaling_of,
    wanted,
)
from kairyu_planner.scalercontrol import ScalerControl
from kairyu_planner.settings import AutoscalingSettings
from kairyu_testing.recording import RecordingKube

KAITO = {
    "scaledobject.kaito.sh/auto-provision": "true",
    "scaledobject.kaito.sh/max-replicas": "5",
    "scaledobject.kaito.sh/threshold": "10",
}


def annotated(**extra: str) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "metadata": {
            "name": "phi",
            "namespace": "ml",
            "uid": "u1",
            "annotations": {**KAITO, **extra},
        },
        "spec": {"replicas": 1},
    }


def test_a_kaito_annotated_set_gets_a_scaled_object_on_its_scale_subresource() -> None:
    body = annotated()
    scaling = scaling_of(body["metadata"]["annotations"], replica_limit=16)
    manifest = scaled_object(body, scaling, activator_url="http://act.sys.svc:8080/")
    spec = manifest["spec"]
    assert manifest["metadata"]["name"] == "phi"
    assert manifest["metadata"]["annotations"] == {"scaledobject.kaito.sh/managed-by": "kairyu"}
    (owner,) = manifest["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("InferenceSet", "u1", True)
    assert spec["scaleTargetRef"] == {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "name": "phi",
    }
    # KAITO keeps one replica unless told otherwise.
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 5)
    # A new set is not taken to zero before it could serve once.
    assert (spec["cooldownPeriod"], spec["initialCooldownPeriod"]) == (300, 900)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "metrics-api"
    assert trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["targetValue"] == "10"
    assert trigger["metadata"]["activationTargetValue"] == "0"
    url = urlsplit(trigger["metadata"]["url"])
    assert (url.netloc, url.path) == ("act.sys.svc:8080", "/v1/load/ml/phi")
    assert parse_qs(url.query) == {"metric": ["vllm:num_requests_waiting"]}


def test_kairyu_s_annotations_allow_zero_and_set_cooldown_and_polling() -> None:
    annotations = {
        **KAITO,
        "scaledobject.kaito.sh/metricName": "vllm:num_requests_running",
        "scaledobject.kairyu.io/min-replicas": "0",
        "scaledobject.kairyu.io/cooldown-seconds": "30",
        "scaledobject.kairyu.io/polling-seconds": "2",
        "scaledobject.kairyu.io/initial-cooldown-seconds": "60",
    }
    scaling = scaling_of(annotations, replica_limit=16)
    spec = scaled_object(annotated(), scaling, activator_url="http://a")["spec"]
    assert (spec["minReplicaCount"], spec["cooldownPeriod"], spec["pollingInterval"]) == (0, 30, 2)
    assert spec["initialCooldownPeriod"] == 60
    assert "metric=vllm%3Anum_requests_running" in spec["triggers"][0]["metadata"]["url"]
    assert scaling.describe() == "0..5 replicas on vllm:num_requests_running above 10 per replica"
    # The HPA steps down after the same cooldown, and uses the behavior rules: a recent busy
    # recommendation holds replicas back but never lifts a set that a request just woke.
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == {"scaleDown": {"stabilizationWindowSeconds": 30}}


def test_the_hpa_window_stays_within_the_hour_kubernetes_allows() -> None:
    annotations = {**KAITO, "scaledobject.kairyu.io/cooldown-seconds": "86400"}
    scaling = scaling_of(annotations, replica_limit=16)
    spec = scaled_object(annotated(), scaling, activator_url="http://a")["spec"]
    assert spec["cooldownPeriod"] == 86400
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 3600


def test_only_auto_provision_true_opts_in() -> None:
    assert wanted({"scaledobject.kaito.sh/auto-provision": "True"})
    assert not wanted({"scaledobject.kaito.sh/auto-provision": "false"})
    assert not wanted({"scaledobject.kaito.sh/max-replicas": "3"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scaledobject.kaito.sh/max-replicas": None}, "max-replicas is required"),
        ({"scaledobject.kaito.sh/threshold": None}, "threshold is required"),
        ({"scaledobject.kaito.sh/max-replicas": "lots"}, "must be a whole number, not 'lots'"),
        ({"scaledobject.kaito.sh/max-replicas": "²"}, "must be a whole number, not '²'"),
        ({"scaledobject.kaito.sh/max-replicas": "0"}, "between 1 and 16, not 0"),
        # An annotation cannot order an unbounded number of GPU nodes.
        ({"scaledobject.kaito.sh/max-replicas": "10000"}, "between 1 and 16, not 10000"),
        ({"scaledobject.kairyu.io/min-replicas": "6"}, "between 0 and 5, not 6"),
        ({"scaledobject.kaito.sh/threshold": "0"}, "a number above 0, not '0'"),
        ({"scaledobject.kaito.sh/threshold": "1e400"}, "a number above 0"),
        ({"scaledobject.kaito.sh/threshold": "-3"}, "a number above 0"),
        # metricName names a gauge the activator reads, never a query of any kind.
        (
            {"scaledobject.kaito.sh/metricName": 'sum(up{job="x"})'},
            "must be one of vllm:num_requests_waiting, vllm:num_requests_running",
        ),
        ({"scaledobject.kairyu.io/cooldown-seconds": "-1"}, "must be a whole number"),
        ({"scaledobject.kairyu.io/polling-seconds": "0"}, "between 1 and 3600, not 0"),
    ],
)
def test_bad_annotations_are_named_with_what_is_wrong(
    change: dict[str, str | None], message: str
) -> None:
    annotations: dict[str, str] = dict(KAITO)
    for key, value in change.items():
        if value is None:
            annotations.pop(key)
        else:
            annotations[key] = value
    with pytest.raises(AutoscalingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        scaling_of(annotations, replica_limit=16)


def test_the_load_url_quotes_what_it_names() -> None:
    url = load_url("http://a/", "ml", "phi", "vllm:num_requests_waiting")
    assert url == "http://a/v1/load/ml/phi?metric=vllm%3Anum_requests_waiting"


async def test_a_set_made_invalid_loses_its_scaled_object_and_a_refusal_is_a_condition() -> None:
    body = annotated()
    body["status"] = {"conditions": [{"type": "AutoscalingReady", "status": "True"}]}
    kube = RecordingKube(allow_reads=True)
    path = "/apis/keda.sh/v1alpha1/namespaces/ml/scaledobjects/phi"
    kube.answers[path] = {
        "metadata": {
            "name": "phi",
            "uid": "so-1",
            "annotations": {"scaledobject.kaito.sh/managed-by": "kairyu"},
            "ownerReferences": [{"uid": "u1", "controller": True}],
        }
    }
    control = ScalerControl(kube=kube, settings=AutoscalingSettings(), field_manager="p")
    body["metadata"]["annotations"]["scaledobject.kaito.sh/threshold"] = "none"
    made, _ = await control.reconcile(body)
    assert made is not None
    assert (made["status"], made["reason"]) == ("False", "InvalidAutoscaling")
    (deleted,) = kube.writes_to("/scaledobjects", "DELETE")
    assert deleted.body == {"preconditions": {"uid": "so-1"}}

    # KEDA's webhook refuses it (say, an HPA already scales the set): said, and tried again.
    kube = RecordingKube()
    kube.fail_with("PATCH", "/scaledobjects/phi", errors.from_status(403, "denied by webhook"))
    control = ScalerControl(kube=kube, settings=AutoscalingSettings(), field_manager="p")
    refused, again = await control.reconcile(annotated())
    assert refused is not None
    assert (refused["reason"], again) == ("ScaledObjectRefused", 60.0)
    assert "denied by webhook" in refused["message"]
