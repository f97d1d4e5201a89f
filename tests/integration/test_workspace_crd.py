"""The Workspace CRD on a real apiserver: seed manifests apply unchanged; bad ones are refused."""

import copy
import json
from typing import Any

import pytest

from kairyu_localenv import LocalCluster
from kairyu_localenv.cluster import KubectlError
from kairyu_testing.plugin import unique
from kairyu_testing.seeds import seed, seed_path

SPEC_FIELDS = ("resource", "inference", "tuning")


def test_seed_manifests_apply_and_read_back_unchanged(cluster: LocalCluster) -> None:
    # The inference and tuning seeds share a name, as in the seed: one namespace each.
    for name in ("inference", "tuning", "adapter"):
        ns = unique("seed")
        cluster.create_namespace(ns)
        manifest = seed(name)
        cluster.kubectl("apply", "-n", ns, "-f", str(seed_path(name)))
        stored = json.loads(
            cluster.kubectl(
                "get",
                "workspaces.v1alpha1.kaito.sh",
                manifest["metadata"]["name"],
                "-n",
                ns,
                "-o",
                "json",
            ).stdout
        )
        assert stored["apiVersion"] == "kaito.sh/v1alpha1"
        assert {k: stored.get(k) for k in SPEC_FIELDS} == {k: manifest.get(k) for k in SPEC_FIELDS}

        header = (
            cluster.kubectl("get", "workspaces.v1alpha1.kaito.sh", "-n", ns)
            .stdout.splitlines()[0]
            .split()
        )
        assert header == [
            "NAME",
            "INSTANCE",
            "RESOURCEREADY",
            "INFERENCEREADY",
            "WORKSPACEREADY",
            "AGE",
        ]
        # Plain `kubectl get workspace` lists the preferred version, v1beta1, with KAITO's columns.
        header = cluster.kubectl("get", "workspace", "-n", ns).stdout.splitlines()[0].split()
        assert header == [
            "NAME",
            "INSTANCE",
            "RESOURCEREADY",
            "INFERENCEREADY",
            "JOBSTARTED",
            "WORKSPACESUCCEEDED",
            "TARGETNODECOUNT",
            "STATE",
            "AGE",
        ]
        row = cluster.kubectl(
            "get", "workspaces.v1alpha1.kaito.sh", "-n", ns, "--no-headers"
        ).stdout.split()
        assert row[:2] == [manifest["metadata"]["name"], "Standard_NC6s_v3"]


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        doc = doc.setdefault(key, {})
    if value is _DELETE:
        del doc[leaf]
    else:
        doc[leaf] = value


_DELETE = object()
_INFERENCE = seed("inference")
_TUNING = seed("tuning")
_ADAPTER = seed("adapter")


def variant(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    for path, value in changes.items():
        _set(doc, path.replace("__", "."), value)
    return doc


def adapters(*entries: dict[str, Any]) -> dict[str, Any]:
    return variant(_ADAPTER, inference__adapters=list(entries))


_A = {"source": {"name": "a", "image": "example.com/a:1"}}

INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "count-not-a-number": (variant(_INFERENCE, resource__count="two"), "resource.count"),
    "count-zero": (variant(_INFERENCE, resource__count=0), "resource.count"),
    "instance-type-not-a-string": (
        variant(_INFERENCE, resource__instanceType=["a"]),
        "resource.instanceType",
    ),
    "no-label-selector": (
        variant(_INFERENCE, resource__labelSelector=_DELETE),
        "resource.labelSelector",
    ),
    "both-inference-and-tuning": (
        variant(_INFERENCE, tuning=_TUNING["tuning"]),
        "exactly one of inference or tuning",
    ),
    "neither-inference-nor-tuning": (
        variant(_INFERENCE, inference=_DELETE),
        "exactly one of inference or tuning",
    ),
    "preset-and-template": (
        variant(_INFERENCE, inference__template={"spec": {"containers": [{"name": "x"}]}}),
        "inference needs exactly one of preset or template",
    ),
    # The deployer builds the workload from these; a string there used to pass and crash it.
    "template-spec-not-an-object": (
        variant(_INFERENCE, inference__preset=_DELETE, inference__template={"spec": "x"}),
        "inference.template.spec: Invalid value",
    ),
    "template-without-containers": (
        variant(_INFERENCE, inference__preset=_DELETE, inference__template={"spec": {}}),
        "inference.template.spec.containers: Required value",
    ),
    "node-count-over-the-cap": (
        variant(_INFERENCE, resource__count=100_000),
        "resource.count: Invalid value",
    ),
    "unknown-tuning-method": (variant(_TUNING, tuning__method="sft"), "tuning.method"),
    "adapter-strength-2": (adapters({**_A, "strength": "2.0"}), "inference.adapters[0].strength"),
    "adapter-strength-not-a-number": (
        adapters({**_A, "strength": "strong"}),
        "inference.adapters[0].strength",
    ),
    "adapter-without-name": (
        adapters({"source": {"image": "example.com/a:1"}}),
        "inference.adapters[0].source.name",
    ),
    "adapter-from-urls": (
        adapters({"source": {"name": "a", "urls": ["https://example.com/a"]}}),
        "inference.adapters[0].source.urls",
    ),
    "adapter-names-repeat": (adapters(_A, _A), "adapter names must be unique"),
    "eleven-adapters": (
        adapters(*[{"source": {"name": f"a{i}", "image": "x/y:1"}} for i in range(11)]),
        "inference.adapters",
    ),
    "input-urls-and-image": (
        variant(_TUNING, tuning__input__image="example.com/data:1"),
        "tuning.input",
    ),
    "input-url-not-http": (
        variant(_TUNING, tuning__input__urls=["ftp://example.com/d.parquet"]),
        "tuning.input.urls[0]",
    ),
    "output-image-without-push-secret": (
        variant(_TUNING, tuning__output__imagePushSecret=_DELETE),
        "tuning.output.imagePushSecret",
    ),
    "output-image-and-volume": (
        variant(_TUNING, tuning__output__volumeSource={"emptyDir": {}}),
        "tuning.output",
    ),
    "tuning-without-input": (variant(_TUNING, tuning__input=_DELETE), "tuning.input"),
    "tuning-without-preset": (variant(_TUNING, tuning__preset=_DELETE), "tuning.preset"),
    "unknown-field": (variant(_INFERENCE, resource__instancetype="x"), "resource.instancetype"),
    "name-not-a-dns-label": (variant(_INFERENCE, metadata__name="phi.3"), "metadata.name"),
}


@pytest.mark.parametrize("case", INVALID, ids=str)
def test_structurally_invalid_workspace_is_rejected_naming_the_field(
    cluster: LocalCluster, namespace: str, case: str
) -> None:
    manifest, field = INVALID[case]
    with pytest.raises(KubectlError) as rejected:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    assert field in str(rejected.value)
    listed = cluster.kubectl("get", "workspaces", "-n", namespace, "-o", "name").stdout
    assert listed.strip() == ""
