"""What travels on the state stream (trimmed objects) and the view services build from it."""

from __future__ import annotations

from typing import Any

from kairyu_contracts.objectstate import ObjectKey, content_digest, trim, workspace_key
from kairyu_core.view import View


def _pod(name: str, workspace: str, phase: str = "Running") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "labels": {"kaito.sh/workspace": workspace},
            "managedFields": [{"manager": "kubelet"}],
        },
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x" * 500}]},
        "status": {"phase": phase, "podIP": "10.0.0.1"},
    }


def _node(heartbeat: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "gpu-1",
            "uid": "n-uid",
            "resourceVersion": heartbeat,
            "labels": {"kaito.sh/workspace": "ws", "kaito.sh/workspacenamespace": "ns"},
        },
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat},
            ],
            "allocatable": {"nvidia.com/gpu": "1"},
            "images": [{"names": ["big"]}],
        },
    }


def test_trimming_keeps_what_services_read_and_drops_the_rest() -> None:
    pod = trim("Pod", _pod("p", "ws"))
    assert pod["metadata"]["uid"] == "uid-p"
    assert pod["metadata"]["labels"] == {"kaito.sh/workspace": "ws"}
    assert "managedFields" not in pod["metadata"]
    assert pod["spec"] == {"nodeName": "n1"}
    # hostIP and the like go; podIP stays (the activator asks a pod for its load there).
    assert pod["status"] == {"phase": "Running", "podIP": "10.0.0.1"}


def test_a_node_heartbeat_does_not_change_the_digest_but_readiness_does() -> None:
    one, two = trim("Node", _node("t1")), trim("Node", _node("t2"))
    assert "images" not in one["status"]
    assert content_digest(one) == content_digest(two)
    not_ready = _node("t3")
    not_ready["status"]["conditions"][0]["status"] = "False"
    assert content_digest(trim("Node", not_ready)) != content_digest(one)


def test_objects_belong_to_the_workspace_their_labels_name() -> None:
    assert workspace_key("Pod", _pod("p", "ws")) == "ns/ws"
    assert workspace_key("Node", _node("t")) == "ns/ws"
    unlabelled = _pod("p", "ws")
    unlabelled["metadata"]["labels"] = {}
    assert workspace_key("Pod", unlabelled) is None


def test_the_view_indexes_objects_by_workspace_and_says_whom_a_change_concerns() -> None:
    view = View(["Pod"])
    key = ObjectKey("Pod", "ns", "p")
    assert view.apply(key, trim("Pod", _pod("p", "ws"))) == {"ns/ws"}
    assert [p["metadata"]["name"] for p in view.owned("Pod", "ns/ws")] == ["p"]
    # relabelled to another Workspace: both are concerned, and it moves
    assert view.apply(key, trim("Pod", _pod("p", "other"))) == {"ns/ws", "ns/other"}
    assert view.owned("Pod", "ns/ws") == []
    assert view.apply(key, None) == {"ns/other"}
    assert view.owned("Pod", "ns/other") == []
    assert len(view) == 0


def test_a_fresh_snapshot_touches_only_workspaces_whose_objects_changed() -> None:
    view = View(["Pod"])
    a, b = ObjectKey("Pod", "ns", "a"), ObjectKey("Pod", "ns", "b")
    view.replace("Pod", {a: trim("Pod", _pod("a", "wa")), b: trim("Pod", _pod("b", "wb"))})
    later = {
        a: trim("Pod", _pod("a", "wa")),
        ObjectKey("Pod", "ns", "c"): trim("Pod", _pod("c", "wc")),
    }
    assert view.replace("Pod", later) == {"ns/wb", "ns/wc"}  # b deleted meanwhile, c new
    assert view.workspace_keys() == ["ns/wa", "ns/wc"]
