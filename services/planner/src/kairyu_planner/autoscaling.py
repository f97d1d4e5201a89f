"""The KEDA ScaledObject an annotated InferenceSet asks for (pure).

KAITO's keda-kaito-scaler contract, so KAITO users' annotated sets scale unchanged: a set with
`scaledobject.kaito.sh/auto-provision: "true"`, `max-replicas` and `threshold` (and optionally
`metricName`) gets a ScaledObject of the same name that targets the set's scale subresource and
is annotated `scaledobject.kaito.sh/managed-by`. kairyu adds three annotations of its own:

- `scaledobject.kairyu.io/min-replicas` (default 1, as KAITO keeps one): `0` allows the set to
  scale to zero, which frees its GPU nodes; the activator answers its requests meanwhile and its
  demand wakes the set (docs/autoscaling.md);
- `scaledobject.kairyu.io/cooldown-seconds` (default 300): how long a set stays idle before it
  goes to zero;
- `scaledobject.kairyu.io/initial-cooldown-seconds` (default 900): how long a new set may take
  to serve before an idle one goes to zero (KEDA's `initialCooldownPeriod`; without it KEDA
  takes a set that has not served yet, so has no load, to zero at once);
- `scaledobject.kairyu.io/polling-seconds` (default 5): how often KEDA reads the load.

The trigger is KEDA's metrics-api scaler reading the set's load from the activator, which adds
the vLLM metric of every ready pod of the set to the requests waiting at the activator itself
(docs/autoscaling.md says why this and not Prometheus). The metric is per replica
(`AverageValue`): the set grows when the sum over its pods exceeds `threshold` times its
replicas. `metricName` is one of vLLM's load gauges, nothing else: it names a series the
activator reads, not a query.

Bad annotations never reach KEDA: the set gets an `AutoscalingReady=False` condition that names
the annotation and what is wrong with it, and no ScaledObject (one made before is deleted).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kairyu_contracts.api.inferenceset import LOAD_METRICS, autoscaled
from kairyu_contracts.labels import AUTO_PROVISION_ANNOTATION
from kairyu_contracts.workloads import controller_reference

JSON = dict[str, Any]

KAITO_PREFIX = "scaledobject.kaito.sh/"
AUTO_PROVISION = AUTO_PROVISION_ANNOTATION
MAX_REPLICAS = KAITO_PREFIX + "max-replicas"
METRIC_NAME = KAITO_PREFIX + "metricName"
THRESHOLD = KAITO_PREFIX + "threshold"
MANAGED_BY = KAITO_PREFIX + "managed-by"
MIN_REPLICAS = "scaledobject.kairyu.io/min-replicas"
COOLDOWN = "scaledobject.kairyu.io/cooldown-seconds"
POLLING = "scaledobject.kairyu.io/polling-seconds"
INITIAL_COOLDOWN = "scaledobject.kairyu.io/initial-cooldown-seconds"
MANAGER = "kairyu"
"""The value of `scaledobject.kaito.sh/managed-by` on the ScaledObjects kairyu makes."""

METRICS = LOAD_METRICS
DEFAULT_METRIC = METRICS[0]

CONDITION = "AutoscalingReady"
APPLIED = "ScaledObjectApplied"
INVALID = "InvalidAutoscaling"
TAKEN = "ScaledObjectTaken"
UNAVAILABLE = "KedaUnavailable"
REFUSED = "ScaledObjectRefused"

_COOLDOWN_DEFAULT = 300
_INITIAL_COOLDOWN_DEFAULT = 900  # a GPU node, then the weights: a first pod's start
_POLLING_DEFAULT = 5
_POLLING_MAX = 3600
_HPA_WINDOW_MAX = 3600  # autoscaling/v2 refuses a stabilization window above an hour
_COOLDOWN_MAX = 7 * 24 * 3600
_NUMBER = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
_WHOLE = re.compile(r"[0-9]{1,9}")  # ASCII digits only: str.isdigit() also takes "²"


class AutoscalingError(ValueError):
    """An annotation that cannot be turned into a ScaledObject; the message names it."""


@dataclass(frozen=True)
class Scaling:
    """What an annotated set's annotations say, checked."""

    min_replicas: int
    max_replicas: int
    metric: str
    threshold: str
    cooldown_s: int
    initial_cooldown_s: int
    polling_s: int

    def describe(self) -> str:
        return (
            f"{self.min_replicas}..{self.max_replicas} replicas on {self.metric} above "
            f"{self.threshold} per replica"
        )


def wanted(annotations: dict[str, str]) -> bool:
    """Whether the set opts in to autoscaling (KAITO: `auto-provision: "true"`)."""
    return autoscaled({"metadata": {"annotations": annotations}})


def _integer(
    annotations: dict[str, str], key: str, default: int | None, low: int, high: int
) -> int:
    raw = annotations.get(key)
    if raw is None:
        if default is None:
            raise AutoscalingError(f"{key} is required with {AUTO_PROVISION}")
        return default
    text = str(raw).strip()
    if not _WHOLE.fullmatch(text):
        raise AutoscalingError(f"{key} must be a whole number, not {raw!r}")
    value = int(text)
    if not low <= value <= high:
        raise AutoscalingError(f"{key} must be between {low} and {high}, not {value}")
    return value


def scaling_of(annotations: dict[str, str], *, replica_limit: int) -> Scaling:
    """The checked scaling of an opted-in set; AutoscalingError names a bad annotation.

    `replica_limit`: the most replicas any set may scale to (the planner's setting), so an
    annotation cannot order an unbounded number of GPU nodes.
    """
    maximum = _integer(annotations, MAX_REPLICAS, None, 1, replica_limit)
    minimum = _integer(annotations, MIN_REPLICAS, 1, 0, maximum)
    metric = str(annotations.get(METRIC_NAME, DEFAULT_METRIC)).strip()
    if metric not in METRICS:
        raise AutoscalingError(f"{METRIC_NAME} must be one of {', '.join(METRICS)}, not {metric!r}")
    raw = annotations.get(THRESHOLD)
    if raw is None:
        raise AutoscalingError(f"{THRESHOLD} is required with {AUTO_PROVISION}")
    threshold = str(raw).strip()
    if (
        not _NUMBER.fullmatch(threshold)
        or not math.isfinite(float(threshold))
        or float(threshold) <= 0
    ):
        raise AutoscalingError(f"{THRESHOLD} must be a number above 0, not {raw!r}")
    return Scaling(
        min_replicas=minimum,
        max_replicas=maximum,
        metric=metric,
        threshold=threshold,
        cooldown_s=_integer(annotations, COOLDOWN, _COOLDOWN_DEFAULT, 0, _COOLDOWN_MAX),
        initial_cooldown_s=_integer(
            annotations, INITIAL_COOLDOWN, _INITIAL_COOLDOWN_DEFAULT, 0, _COOLDOWN_MAX
        ),
        polling_s=_integer(annotations, POLLING, _POLLING_DEFAULT, 1, _POLLING_MAX),
    )


def load_url(base: str, namespace: str, name: str, metric: str) -> str:
    """Where the activator serves one set's load, as KEDA's metrics-api scaler reads it."""
    return (
        f"{base.rstrip('/')}/v1/load/{quote(namespace, safe='')}/{quote(name, safe='')}"
        f"?metric={quote(metric, safe='')}"
    )


def hpa_behavior(scaling: Scaling) -> JSON:
    """The HPA's behavior: steps down after the set's cooldown, never up on an old recommendation.

    Without a behavior the HPA follows its legacy rule: the highest recommendation of the last
    five minutes wins, whatever the current replicas. A set KEDA took to zero and a request woke
    (one replica) would then jump straight back to the replicas it had when busy, each a GPU node,
    for one request. With a behavior the HPA's scale-down window only holds replicas back; it never
    lifts them. Its length is the set's cooldown (the HPA's own limit is an hour).
    """
    return {"scaleDown": {"stabilizationWindowSeconds": min(scaling.cooldown_s, _HPA_WINDOW_MAX)}}


def scaled_object(inference_set: JSON, scaling: Scaling, *, activator_url: str) -> JSON:
    """The ScaledObject for `inference_set`: owned by it, named like it, its trigger the load."""
    meta = inference_set["metadata"]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "annotations": {MANAGED_BY: MANAGER},
            "ownerReferences": [
                controller_reference(
                    inference_set, kind="InferenceSet", api_version="kaito.sh/v1beta1"
                )
            ],
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": inference_set.get("apiVersion", "kaito.sh/v1beta1"),
                "kind": "InferenceSet",
                "name": meta["name"],
            },
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": scaling.polling_s,
            "cooldownPeriod": scaling.cooldown_s,
            "initialCooldownPeriod": scaling.initial_cooldown_s,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": hpa_behavior(scaling)}},
            "triggers": [
                {
                    "type": "metrics-api",
                    "metricType": "AverageValue",
                    "metadata": {
                        "url": load_url(
                            activator_url, meta["namespace"], meta["name"], scaling.metric
                        ),
                        "valueLocation": "value",
                        "targetValue": scaling.threshold,
                        # Any waiting request wakes a set at zero.
                        "activationTargetValue": "0",
                    },
                }
            ],
        },
    }


def condition(status: bool, reason: str, message: str, generation: Any) -> JSON:
    return {
        "type": CONDITION,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message[:1024],
        "observedGeneration": generation,
    }
