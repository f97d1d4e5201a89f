"""The tuner's settings (KAIRYU_* variables; kairyu_core.settings has the shared groups)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kairyu_core.settings import ServiceSettings


class JobSettings(BaseModel):
    """Images and limits of tuning Jobs (KAIRYU_JOB__*)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tuning_image: str = "ghcr.io/kairyu/tuning:0.1.0"
    """kairyu's tuning image (images/tuning): the entrypoint, the downloader and the pusher."""
    data_puller_image: str = "mcr.microsoft.com/aks/skopeo:1.14.4-6"
    """Copies an input image's /data into the pod (KAITO's puller)."""
    max_download_mib: int = Field(default=10240, ge=1)
    """Largest training file the downloader accepts."""
    download_allow_cidrs: list[str] = Field(default_factory=list)
    """Internal networks the downloader may reach (an in-cluster data server); none by default."""
    active_deadline_s: int = Field(default=86_400, ge=60)
    """Longest a tuning Job may run (activeDeadlineSeconds), 24 h by default: a hung run or a
    stalled download must not hold its GPU node for ever."""
    run_as_user: int = Field(default=1000, ge=1)
    """UID of kairyu's tuning image (images/tuning/Dockerfile: USER 1000); the pod runs as it."""
    shm_size_limit: str = "32Gi"
    """sizeLimit of the memory-backed /dev/shm (NCCL's buffers); it counts as the pod's memory."""
    scratch_gib: int = Field(default=10, ge=1)
    """sizeLimit of the results volume, and headroom of the weights and data volumes."""
    backoff_limit: int = Field(default=0, ge=0)
    """Retries of a failed tuning pod; 0 because a failed run usually fails again, on GPU time."""


class TunerSettings(ServiceSettings):
    """Settings of the tuner service."""

    service_name: str = "kairyu-tuner"
    namespace: str | None = None
    """Only Workspaces of this namespace; all namespaces when unset."""
    job: JobSettings = JobSettings()
