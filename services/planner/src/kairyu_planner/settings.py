"""The planner's settings (KAIRYU_* variables; see kairyu_core.settings for the shared groups)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kairyu_contracts.api import MAX_NODE_COUNT
from kairyu_contracts.api.inferenceset import MAX_REPLICAS
from kairyu_contracts.catalog import Cloud
from kairyu_core.settings import NodeProvisioner, ServiceSettings


class PlanningSettings(BaseModel):
    """What the planner may choose from and how it sizes a model (KAIRYU_PLANNING__*)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cloud: Cloud = Cloud.AZURE
    """The cloud whose SKUs are valid instance types and candidates for automatic choice."""
    node_provisioner: NodeProvisioner = "karpenter"
    """Where GPU nodes come from (the provisioner's backend; the chart sets both from
    `global.nodeProvisioner`). With `byo` (KAITO's disableNodeAutoProvisioning) a new Workspace
    names no instance type, and the planner sizes it from the GPU labels of the nodes its
    labelSelector matches (kairyu_planner.byonodes)."""

    @property
    def byo(self) -> bool:
        return self.node_provisioner == "byo"

    allowed_skus: frozenset[str] | None = None
    """SKUs the planner may pick when a Workspace names none (all priced SKUs of the cloud when
    unset). A JSON list in the environment."""
    max_nodes: int = Field(default=4, ge=1, le=MAX_NODE_COUNT)
    """Most nodes one Workspace may use: a model that needs more, a `resource.count` above it or
    a template Workspace asking for more is refused (webhook and planner). The CRD holds every
    Workspace to MAX_NODE_COUNT whatever this says."""
    max_cost_per_hour: float | None = Field(default=None, gt=0)
    """Most one Workspace's plan may cost, in USD per hour at the catalog's list prices (all of
    its nodes together); a plan above it is refused with `Planned=False, CostLimitExceeded`, and
    so is a SKU without a list price. Unset: no ceiling."""
    allow_host_access: bool = False
    """Admit Workspaces whose pods reach into the node: node-level volume types (hostPath and
    anything else outside the restricted Pod Security Standard's list) in inputs, outputs,
    adapters or the inference template, and privileged, hostNetwork / hostPID / hostIPC,
    hostPort or added-capability templates. Off: the webhook and the planner refuse them."""
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    overhead_gib: float = Field(default=2.3, ge=0)
    min_model_len: int = Field(default=2048, ge=1)
    concurrency: int = Field(default=1, ge=1)


class AutoscalingSettings(BaseModel):
    """ScaledObjects of annotated InferenceSets (KAIRYU_AUTOSCALING__*; .autoscaling)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    activator_url: str = "http://kairyu-activator.kairyu-system.svc:8080"
    """Where KEDA reads a set's load: the activator's address as KEDA's operator reaches it."""
    max_replicas: int = Field(default=16, ge=1, le=MAX_REPLICAS)
    """Most replicas a set's `scaledobject.kaito.sh/max-replicas` may ask for; each replica is
    a Workspace with GPU nodes of its own, so an annotation never orders an unbounded number."""


class HubSettings(BaseModel):
    """Where the planner reads model metadata (KAIRYU_HUB__*)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str = "https://huggingface.co"
    """The Hub, or a mirror that speaks its API."""
    timeout_s: float = Field(default=20.0, gt=0)
    resolve_ttl_s: float = Field(default=3600.0, ge=0)
    """How long a branch's resolution to a commit is reused."""
    cache_size: int = Field(default=1024, ge=1)
    """Models (id and commit) whose metadata is kept."""
    concurrency: int = Field(default=4, ge=1)


class SelfIssuedSettings(BaseModel):
    """The webhook certificate the planner issues and renews (KAIRYU_WEBHOOK__SELF_ISSUED__*).

    The chart's default mode: nothing random is rendered, the planner keeps its CA and serving
    certificate in `secret` and sets the caBundle of `configuration` (kairyu_planner.certificates).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret: str = ""
    """The kubernetes.io/tls Secret to keep the pair in; empty: off (cert_file/key_file are
    someone else's, e.g. cert-manager's)."""
    namespace: str = ""
    """The planner's namespace: the Secret's and the Service's."""
    service: str = ""
    """The webhook's Service; the certificate names <service>.<namespace>.svc and shorter forms."""
    configuration: str = ""
    """The ValidatingWebhookConfiguration whose every webhook gets the CA as its caBundle."""
    validity_days: int = Field(default=3650, ge=1)
    """How long a certificate is valid; it is re-issued at 2/3 of that."""
    check_interval_s: float = Field(default=3600.0, gt=0)
    """How often the Secret and the caBundle are checked again (and the served pair reloaded)."""

    @model_validator(mode="after")
    def _complete(self) -> SelfIssuedSettings:
        if self.secret and not (self.namespace and self.service and self.configuration):
            raise ValueError("secret needs namespace, service and configuration")
        return self


class WebhookSettings(BaseModel):
    """The admission webhook's TLS listener (KAIRYU_WEBHOOK__*); off when no certificate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "0.0.0.0"  # noqa: S104 - the webhook must be reachable by the apiserver
    port: int = Field(default=9443, ge=0, le=65535)
    cert_file: Path | None = None
    key_file: Path | None = None
    """The serving certificate and key; read again when either file changes (a cert-manager
    renewal or a Secret update), without a restart."""
    self_issued: SelfIssuedSettings = SelfIssuedSettings()
    """When its `secret` is set, the planner serves a certificate of its own, not the files."""


class PlannerSettings(ServiceSettings):
    """Settings of the planner service."""

    service_name: str = "kairyu-planner"
    planning: PlanningSettings = PlanningSettings()
    webhook: WebhookSettings = WebhookSettings()
    hub: HubSettings = HubSettings()
    autoscaling: AutoscalingSettings = AutoscalingSettings()
