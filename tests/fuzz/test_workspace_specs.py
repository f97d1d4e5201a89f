"""Property: every Workspace spec is admitted and handled, or refused with a message; none raises.

Generated specs (well-formed, half-formed and hostile: wrong types where objects belong, node-level
volumes, huge counts) go the way a real one does, without a cluster: the admission webhook's
AdmissionReview handling, then the planner's validate-and-plan path, then, for what was planned,
the deployer's or the tuner's manifest builders with the plan and ready nodes in status. A spec
the webhook admits must never crash a later step: a crash there is retried on every event and
shows the user nothing.

Admitted specs must also build pods that cannot reach into the node (no hostPath, host
namespaces or privileged containers: the admin's allowHostAccess is off here). UPDATEs (an old
spec to a new one, the Workspace sometimes being deleted) go through the webhook too: nothing
raises, every refusal says why, and an admitted change of the spec never carries a pod the pod
rules refuse.

The run is bounded for `make test` (KAIRYU_FUZZ_EXAMPLES, 500 by default) and longer with
`make fuzz`. Hypothesis keeps no example database here, so runs do not leave files behind.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kairyu_contracts.api import parse_workspace
from kairyu_contracts.catalog import load_catalog
from kairyu_deployer import inference_manifests as deployer_manifests
from kairyu_deployer.app import inference_of
from kairyu_deployer.settings import WorkloadSettings
from kairyu_planner import podsafety
from kairyu_planner.planning import PlanError
from kairyu_planner.settings import PlanningSettings
from kairyu_planner.validated_plan import plan_checked
from kairyu_planner.webhook import review
from kairyu_tuner import tuning_manifests as tuner_manifests
from kairyu_tuner.app import tuning_of
from kairyu_tuner.settings import JobSettings

CATALOG = load_catalog()
PLANNING = PlanningSettings()
EXAMPLES = int(os.environ.get("KAIRYU_FUZZ_EXAMPLES", "500"))

_SKUS = sorted(s.name for s in CATALOG.skus_of(PLANNING.cloud))
_PRESETS = sorted(CATALOG.presets)
_TUNABLE = sorted(p.name for p in CATALOG.presets.values() if p.tuning)
_VOLUME_TYPES = ["emptyDir", "persistentVolumeClaim", "configMap", "secret", "hostPath", "nfs"]

names = st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=12)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=8), st.just("")
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The value, or any JSON value in its place (what a careless or hostile user writes)."""
    return st.one_of(strategy, strategy, strategy, json_values)


volume_sources = maybe(
    st.dictionaries(
        st.sampled_from(_VOLUME_TYPES), maybe(st.just({"path": "/"})), min_size=1, max_size=2
    )
)
containers = st.fixed_dictionaries(
    {"name": names, "image": names},
    optional={
        "securityContext": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "privileged": st.booleans(),
                    "capabilities": maybe(
                        st.fixed_dictionaries({"add": maybe(st.lists(st.just("SYS_ADMIN")))})
                    ),
                    "allowPrivilegeEscalation": st.booleans(),
                    "runAsUser": st.sampled_from([0, 1000]),
                    "procMount": st.sampled_from(["Default", "Unmasked"]),
                    "seLinuxOptions": maybe(
                        st.sampled_from(
                            [{"type": "container_t"}, {"type": "spc_t"}, {"user": "system_u"}]
                        )
                    ),
                    "seccompProfile": maybe(
                        st.sampled_from([{"type": "RuntimeDefault"}, {"type": "Unconfined"}])
                    ),
                },
            )
        ),
        "ports": maybe(st.lists(st.fixed_dictionaries({"containerPort": st.just(80)}))),
    },
)
pod_specs = maybe(
    st.fixed_dictionaries(
        {"containers": maybe(st.lists(containers, max_size=2))},
        optional={
            "volumes": maybe(
                st.lists(
                    st.builds(lambda n, s: {"name": n, **s} if isinstance(s, dict) else s,
                              names, volume_sources),
                    max_size=2,
                )
            ),
            "tolerations": json_values,
            "hostNetwork": st.booleans(),
            "hostPID": st.booleans(),
            "hostIPC": st.booleans(),
            "securityContext": maybe(st.fixed_dictionaries({}, optional={
                "sysctls": maybe(st.lists(st.fixed_dictionaries({
                    "name": st.sampled_from(["net.ipv4.tcp_syncookies", "kernel.core_pattern"]),
                    "value": st.just("1"),
                }), max_size=2)),
                "windowsOptions": st.fixed_dictionaries({"hostProcess": st.booleans()}),
                "appArmorProfile": st.sampled_from(
                    [{"type": "RuntimeDefault"}, {"type": "Unconfined"}]
                ),
            })),
            "initContainers": maybe(st.lists(containers, max_size=1)),
        },
    )
)  # fmt: skip
templates = maybe(
    st.fixed_dictionaries(
        {"spec": pod_specs},
        optional={"metadata": maybe(st.fixed_dictionaries({"labels": maybe(st.just({"a": "b"}))}))},
    )
)
presets = st.fixed_dictionaries(
    {"name": st.sampled_from([*_PRESETS, "no-such-model"])},
    optional={"presetOptions": st.fixed_dictionaries({"modelAccessSecret": names})},
)
adapter_sources: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.fixed_dictionaries({"name": names, "image": names}),
    st.fixed_dictionaries({"name": names, "volumeSource": volume_sources}),
)
adapters = st.fixed_dictionaries(
    {"source": adapter_sources}, optional={"strength": st.sampled_from(["1.0", "0.5"])}
)
inference = st.one_of(
    st.fixed_dictionaries({"preset": presets}, optional={"adapters": st.lists(adapters, max_size=2)}),  # noqa: E501
    st.fixed_dictionaries({"template": templates}),
    st.fixed_dictionaries({"template": templates}),
)  # fmt: skip
data_in = st.one_of(
    st.fixed_dictionaries({"urls": st.lists(st.sampled_from(
        ["https://example.com/d.jsonl"] * 4 + ["http://169.254.169.254/", "http://10.0.0.1/x"]
    ), min_size=1, max_size=2)}),
    st.fixed_dictionaries({"image": names}),
    st.fixed_dictionaries({"volumeSource": volume_sources}),
)  # fmt: skip
data_out = st.one_of(
    st.fixed_dictionaries({"image": names, "imagePushSecret": names}),
    st.fixed_dictionaries({"volumeSource": volume_sources}),
)
tuning = st.fixed_dictionaries(
    {
        "preset": st.one_of(
            st.fixed_dictionaries({"name": st.sampled_from(_TUNABLE)}), st.just({"name": "x"})
        ),
        "method": st.sampled_from(["lora", "qlora", "QLoRA"]),
        "input": data_in,
        "output": data_out,
    }
)
# Mostly valid placement, so that most examples get past planning to the manifest builders.
resources = st.fixed_dictionaries(
    {
        "labelSelector": st.just({"matchLabels": {"apps": "fuzz"}}),
        "instanceType": st.sampled_from([*_SKUS, "Standard_NC999_v9"]),
    },
    optional={"count": st.one_of(st.integers(1, 4), st.integers(1, 200))},
)
annotation_maps = st.fixed_dictionaries(
    {},
    optional={
        "kaito.sh/runtime": st.sampled_from(["vllm", "transformers", "triton", "bogus"]),
        "kaito.sh/bypass-resource-checks": st.sampled_from(["True", "false"]),
    },
)


@st.composite
def workspaces(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {
            "name": "fuzz",
            "namespace": "default",
            "uid": "00000000-0000-0000-0000-000000000001",
            "generation": 1,
            "annotations": draw(annotation_maps),
        },
        "resource": draw(resources),
    }
    if draw(st.booleans()):
        doc["inference"] = draw(inference)
    else:
        doc["tuning"] = draw(tuning)
    return doc


_HOST_KEYS = ("hostNetwork", "hostPID", "hostIPC", "privileged")


def reaches_the_node(value: object) -> list[str]:
    """Every place in generated objects that gives a pod the node (hostPath, host namespaces,
    privileged)."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "hostPath" or (key in _HOST_KEYS and inner):
                found.append(key)
            found += reaches_the_node(inner)
    elif isinstance(value, list):
        for inner in value:
            found += reaches_the_node(inner)
    return found


def admitted(doc: dict[str, Any]) -> bool:
    answer = review({"request": {"uid": "u", "operation": "CREATE", "object": doc}})["response"]
    if not answer["allowed"]:
        assert answer["status"]["message"], "a refusal must say why"
    return bool(answer["allowed"])


def ready(doc: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """The Workspace as the deployer and tuner see it once its nodes are Ready."""
    nodes = [f"node-{i}" for i in range(plan["nodeCount"])]
    condition = {
        "type": "ResourceReady",
        "status": "True",
        "reason": "NodesReady",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    status = {
        "plan": {**plan, "observedGeneration": 1, "digest": "d1"},
        "workerNodes": nodes,
        "workerNodesPlanDigest": "d1",  # the nodes were chosen for this plan
    }
    return {**doc, "status": {**status, "conditions": [condition]}}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(workspaces())
def test_every_spec_is_handled_or_refused_with_a_message(doc: dict[str, Any]) -> None:
    if not admitted(doc):
        event("refused by the webhook")
        return
    try:
        workspace = parse_workspace(doc)
    except ValidationError:  # pragma: no cover - the webhook refuses what the models cannot read
        raise AssertionError("the webhook admitted a Workspace the models cannot read") from None
    result = None
    try:
        result = plan_checked(workspace, CATALOG, PLANNING)
    except PlanError as exc:
        refusal = exc.message
    else:
        refusal = ""
    if refusal or result is None:
        assert refusal, "a planning refusal must say why"
        event("refused by the planner")
        return
    event("built by the deployer" if workspace.inference else "built by the tuner")
    live = parse_workspace(ready(doc, result.plan.to_wire()))
    if live.inference is not None:
        what = inference_of(live, doc, CATALOG)
        assert what is not None
        built = deployer_manifests.objects(what, WorkloadSettings())
    else:
        assert live.tuning is not None
        preset = CATALOG.preset(live.tuning.preset.name)
        assert preset is not None
        job = tuning_of(live, doc, preset, "/mnt/output")
        assert job is not None
        built = tuner_manifests.objects(job, JobSettings())
    assert built
    assert reaches_the_node(list(built)) == [], "an admitted spec built pods that reach the node"


@st.composite
def updates(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """An old Workspace and a new one: the same, or with a new spec, sometimes being deleted."""
    old = draw(workspaces())
    new = draw(st.one_of(st.just(old), workspaces()))
    template = (
        old.get("inference", {}).get("template") if isinstance(old.get("inference"), dict) else None
    )
    if template is not None and draw(st.booleans()):
        # Only the template changes: the immutable fields stay, so the pod rules decide.
        new = {**old, "inference": {"template": draw(templates)}}
    new = {**new, "metadata": {**old["metadata"], "finalizers": ["kairyu.sh/x"]}}
    if draw(st.booleans()):
        new["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return old, new


def _spec(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata", "status")}


@settings(
    max_examples=max(EXAMPLES // 2, 1),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(updates())
def test_every_update_is_admitted_or_refused_with_a_message(
    change: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    old, new = change
    request = {"uid": "u", "operation": "UPDATE", "object": new, "oldObject": old}
    answer = review({"request": request})["response"]
    if not answer["allowed"]:
        assert answer["status"]["message"], "a refusal must say why"
        event("update refused")
        return
    if _spec(new) == _spec(old):
        event("metadata-only update admitted")
        return
    event("spec change admitted")
    # A spec change is checked even on a Workspace being deleted: no pod rule may be broken.
    workspace = parse_workspace(new)
    assert podsafety.problems(workspace, allow_host_access=False) == []
