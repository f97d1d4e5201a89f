"""The deployer's settings (KAIRYU_* variables; kairyu_core.settings has the shared groups)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kairyu_core.settings import ServiceSettings


class WorkloadSettings(BaseModel):
    """Images and timings of the inference workloads (KAIRYU_WORKLOAD__*)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    triton_image: str = "nvcr.io/nvidia/tritonserver:25.10-vllm-python-py3"
    """Triton Inference Server with its vLLM backend, for `kaito.sh/runtime: triton`."""
    vllm_image: str | None = None
    """kairyu's vLLM image (images/runtime/vllm.Dockerfile); unset: the preset's image."""
    transformers_image: str | None = None
    """kairyu's runtime server image (images/runtime/transformers.Dockerfile); unset: preset's."""
    adapter_puller_image: str = "mcr.microsoft.com/aks/skopeo:1.14.4-6"
    """Copies an adapter image's /data into the pod (KAITO's puller)."""
    run_as_user: int = Field(default=1000, ge=1)
    """UID of kairyu's runtime images (images/runtime/*.Dockerfile: USER 1000): pods of a
    configured kairyu image run as it, non-root. Other images (KAITO's presets run as root) keep
    their user and get the other restrictions only."""
    shm_size_limit: str = "32Gi"
    """sizeLimit of the memory-backed /dev/shm (NCCL's buffers); it counts as the pod's memory."""
    scratch_gib: int = Field(default=10, ge=1)
    """sizeLimit of the adapter volume, and headroom of the weights volume over the weights."""
    startup_base_s: int = Field(default=600, ge=0)
    """Startup allowance before the weights: process start, CUDA init, graph capture."""
    startup_s_per_gib: int = Field(default=10, ge=0)
    """Download and load time per GiB of weights (about 100 MiB/s)."""
    activator_namespace: str | None = None
    """kairyu's namespace, where its activator runs: the inference pods' NetworkPolicy lets the
    activator's pods read their /metrics (the chart sets it; unset: no such rule)."""


class DeployerSettings(ServiceSettings):
    """Settings of the deployer service."""

    service_name: str = "kairyu-deployer"
    namespace: str | None = None
    """Only Workspaces of this namespace; all namespaces when unset."""
    workload: WorkloadSettings = WorkloadSettings()
    pending_grace_s: float = Field(default=15.0, ge=0)
    """A workload that is only waiting (no pod problem) gets InferenceReady=False/Pending once it
    has waited this long (s, from its creation); one Ready sooner goes straight to True, saving
    an apiserver write, a state on NATS and a wake-up of every service. Problems (an image that
    cannot be pulled, a crash loop) are written at once."""
