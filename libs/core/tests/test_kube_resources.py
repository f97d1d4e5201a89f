"""The resource label on kairyu_kube_requests_total: what a dashboard groups API calls by."""

from __future__ import annotations

import pytest

from kairyu_core.kube import resources


@pytest.mark.parametrize(
    ("path", "label"),
    [
        (resources.PODS.path(namespace="ns"), "pods"),
        (resources.PODS.path(namespace="ns", name="p"), "pods"),
        ("/api/v1/namespaces/ns/pods/p/log", "pods/log"),
        (
            resources.WORKSPACES.path(namespace="ns", name="w", subresource="status"),
            "workspaces/status",
        ),
        (resources.NODES.path(name="n1"), "nodes"),
        (resources.NODECLAIMS.path(), "nodeclaims"),
        ("/api/v1/namespaces/ns", "namespaces"),
        ("/api/v1/namespaces", "namespaces"),
        ("/apis/apps/v1/deployments?watch=true", "deployments"),
        ("/apis", "discovery"),
    ],
)
def test_each_api_path_is_labelled_by_its_resource_not_its_object(path: str, label: str) -> None:
    assert resources.label_of(path) == label
