"""Simulated GPU nodes: GPU pods are placed by the real scheduler and run under kwok."""

import json
import time
from typing import Any

from kairyu_localenv import GpuNodeSpec, LocalCluster
from kairyu_testing.plugin import unique

V100 = GpuNodeSpec(
    instance_type="Standard_NC6s_v3",
    gpu_product="Tesla-V100-PCIE-16GB",
    gpu_count=1,
    gpu_memory_mib=16384,
)


def deployment(name: str, *, gpus: int, selector: dict[str, str]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": selector,
                    "tolerations": [
                        {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
                    ],
                    "containers": [
                        {
                            "name": "model",
                            "image": "example.invalid/model:1",
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                        }
                    ],
                },
            },
        },
    }


def pods(cluster: LocalCluster, namespace: str, app: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"app={app}", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def test_gpu_pod_runs_on_a_simulated_gpu_node_and_gpus_are_accounted(
    cluster: LocalCluster, namespace: str
) -> None:
    pool = unique("phi")
    (node,) = cluster.add_gpu_nodes(
        V100,
        prefix=pool,
        labels={"apps": pool},
        taints=[{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
    )
    try:
        cluster.apply(
            json.dumps(
                {
                    **deployment("fits", gpus=1, selector={"apps": pool}),
                    "metadata": {"name": "fits", "namespace": namespace},
                }
            )
        )
        cluster.kubectl(
            "wait", "-n", namespace, "--for=condition=Available", "--timeout=60s", "deployment/fits"
        )
        (pod,) = pods(cluster, namespace, "fits")
        assert pod["spec"]["nodeName"] == node
        assert pod["status"]["phase"] == "Running"
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"

        # The node's only GPU is taken: a second GPU pod must wait, as it would on a real cluster.
        cluster.apply(
            json.dumps(
                {
                    **deployment("waits", gpus=1, selector={"apps": pool}),
                    "metadata": {"name": "waits", "namespace": namespace},
                }
            )
        )
        deadline = time.monotonic() + 30
        while True:
            waiting = pods(cluster, namespace, "waits")
            scheduled = [
                c
                for p in waiting
                for c in p["status"].get("conditions", [])
                if c["type"] == "PodScheduled"
            ]
            if scheduled:
                break
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert scheduled[0]["status"] == "False"
        assert "nvidia.com/gpu" in scheduled[0]["message"]
    finally:
        cluster.kubectl("delete", "node", node, "--wait=false", check=False)
