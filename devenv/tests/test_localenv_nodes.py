"""Simulated GPU node manifests."""

from kairyu_localenv import GpuNodeSpec, gpu_node_manifest

V100 = GpuNodeSpec(
    instance_type="Standard_NC6s_v3",
    gpu_product="Tesla-V100-PCIE-16GB",
    gpu_count=1,
    gpu_memory_mib=16384,
)


def test_gpu_node_carries_the_labels_gpu_feature_discovery_would_set() -> None:
    node = gpu_node_manifest(
        "n1",
        V100,
        labels={"apps": "phi-3"},
        taints=[{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
    )
    labels = node["metadata"]["labels"]
    assert labels["node.kubernetes.io/instance-type"] == "Standard_NC6s_v3"
    assert labels["nvidia.com/gpu.product"] == "Tesla-V100-PCIE-16GB"
    assert labels["nvidia.com/gpu.count"] == "1"
    assert labels["nvidia.com/gpu.memory"] == "16384"
    assert labels["apps"] == "phi-3"
    assert node["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert node["spec"]["taints"][0]["key"] == "sku"
