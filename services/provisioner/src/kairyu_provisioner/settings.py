"""The provisioner's settings (KAIRYU_* variables; kairyu_core.settings has the shared groups)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kairyu_contracts.api import MAX_NODE_COUNT
from kairyu_core.settings import NodeProvisioner, ServiceSettings

Backend = NodeProvisioner


class ProvisioningSettings(BaseModel):
    """Readiness, retries and re-plans, whatever the backend (KAIRYU_PROVISIONING__*)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    readiness_timeout_s: float = Field(default=1800.0, gt=0)
    """How long nodes may take to become Ready before ResourceReady turns False with a reason.
    GPU VMs take minutes; 30 minutes covers a slow region without hiding a stuck one."""
    check_interval_s: float = Field(default=30.0, gt=0)
    """How often waiting Workspaces are re-checked and orphans are looked for. Node and NodeClaim
    changes trigger a check at once; this catches what no event announces (BYO nodes, timeouts)."""
    progress_interval_s: float = Field(default=60.0, ge=0)
    """While nodes are being made, ResourceReady=Unknown (Provisioning) says how far they are: a
    new Workspace's first message once they have taken this long (nodes Ready sooner need none),
    an edited one's when the wait starts; then a new progress message alone (a claim launched, a
    node registered) at most this often per Workspace, the latest one once the interval has
    passed. Each message is an apiserver write, a state on NATS and a wake-up of every service;
    0 writes every one at once."""
    refused_retry_s: float = Field(default=300.0, gt=0)
    """After the cloud refuses a SKU that is not replaced (named by the Workspace, or re-plans
    used up), how long before asking for it again; refusals are not retried on every check."""
    max_replans: int = Field(default=3, ge=0)
    """SKUs refused for quota or capacity, per Workspace, before the provisioner stops asking the
    planner for the next-cheapest one and reports the failure."""
    max_nodes: int = Field(default=4, ge=1, le=MAX_NODE_COUNT)
    """Most nodes one Workspace's plan may ask for. The planner holds plans to its own limit
    (KAIRYU_PLANNING__MAX_NODES, the same default; the chart passes both the same value), but
    anyone who may write a Workspace's status could write a bigger plan by hand: a plan above
    this gets ResourceReady=False (PlanOverNodeLimit) and nothing is provisioned."""
    gone_confirm_s: float = Field(default=2.0, ge=0)
    """Seconds between the two reads that must both find a Workspace gone (its own 404, or a
    namesake with another uid) before its NodeClaims / agent pools are removed without the
    finalizer, on a WorkspaceDeleted event or as orphans."""


class KarpenterSettings(BaseModel):
    """NodeClaims for Karpenter (KAIRYU_KARPENTER__*)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_pool: str = "kaito"
    """The pool named by every NodeClaim's `karpenter.sh/nodepool` label, as KAITO names it."""
    node_class_group: str = "karpenter.kwok.sh"
    node_class_kind: str = "KWOKNodeClass"
    node_class_name: str = "default"
    """The NodeClass of the cloud provider: EC2NodeClass on AWS, AKSNodeClass on Azure, the
    KWOKNodeClass in the local cluster."""
    capacity_type: Literal["on-demand", "spot", "reserved"] = "on-demand"


class AzureSettings(BaseModel):
    """AKS agent pools through Azure Resource Manager (KAIRYU_AZURE__*)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subscription_id: str = ""
    resource_group: str = ""
    cluster_name: str = ""
    endpoint: str | None = None
    """ARM's URL; unset means public Azure. Set it for sovereign clouds or a local endpoint."""
    credential: Literal["default", "none"] = "default"
    """`default`: azure-identity's DefaultAzureCredential (workload identity in the cluster, the
    environment or the Azure CLI elsewhere). `none` sends no token and allows plain HTTP; it
    exists for the local test endpoint and is refused for public Azure."""
    os_sku: Literal["Ubuntu", "AzureLinux"] = "Ubuntu"
    operation_wait_s: float = Field(default=20.0, gt=0)
    """How long one check follows a running ARM operation before it lets go and looks again on
    the next check (the operation goes on in Azure meanwhile)."""
    polling_interval_s: float = Field(default=5.0, ge=0)


class ProvisionerSettings(ServiceSettings):
    """Settings of the provisioner service."""

    service_name: str = "kairyu-provisioner"
    backend: Backend = "karpenter"
    namespace: str | None = None
    """Only Workspaces of this namespace (and only their orphans); all namespaces when unset."""
    provisioning: ProvisioningSettings = ProvisioningSettings()
    karpenter: KarpenterSettings = KarpenterSettings()
    azure: AzureSettings = AzureSettings()

    @model_validator(mode="after")
    def _azure_is_configured(self) -> ProvisionerSettings:
        if self.backend != "azure":
            return self
        missing = [
            f"KAIRYU_AZURE__{name.upper()}"
            for name in ("subscription_id", "resource_group", "cluster_name")
            if not getattr(self.azure, name)
        ]
        if missing:
            raise ValueError(f"the azure backend needs {', '.join(missing)}")
        if self.azure.credential == "none" and not self.azure.endpoint:
            raise ValueError(
                "credential=none is only for a local endpoint (KAIRYU_AZURE__ENDPOINT)"
            )
        return self
