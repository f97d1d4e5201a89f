"""AKS agent pools through Azure Resource Manager, one pool per Workspace and SKU.

The pool carries the Workspace's labels, KAITO's GPU taint and an OS disk sized for the model, and
its tags name the Workspace (ARM tag names may not contain `/`, hence the dashes), so orphans can
be found by listing pools. ARM operations are long-running: a check follows one for at most
`operation_wait_s`, then lets go; the pool's provisioningState (and its provisioningError, which
AKS keeps on a failed pool) tells the next check where it stands, in this process or a new one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerservice import models
from azure.mgmt.containerservice.aio import ContainerServiceClient

from kairyu_contracts.labels import MACHINE_TYPE_LABEL
from kairyu_provisioner import naming
from kairyu_provisioner.backends.base import Claims, Owned, Progress
from kairyu_provisioner.failures import CloudFailure, classify
from kairyu_provisioner.node_target import NodeTarget
from kairyu_provisioner.settings import AzureSettings

TAG_UID = "kairyu-workspace-uid"
TAG_NAME = "kairyu-workspace"
TAG_NAMESPACE = "kairyu-workspace-namespace"
_BUSY = {"Creating", "Updating", "Scaling", "Upgrading", "Starting", "Deleting"}


def agent_pool(target: NodeTarget, settings: AzureSettings) -> models.AgentPool:
    """The agent pool for the target's plan: VM size, count, labels, taint, disk."""
    labels = {
        **target.match_labels,
        **naming.workspace_labels(target.namespace, target.name),
        MACHINE_TYPE_LABEL: "gpu",
    }
    taint = naming.GPU_TAINT
    return models.AgentPool(
        properties=models.AgentPoolManagedClusterAgentPoolProfileProperties(
            vm_size=target.instance_type,
            count=target.node_count,
            mode="User",
            os_type="Linux",
            os_sku=settings.os_sku,
            os_disk_size_gb=target.disk_gib,
            node_labels=labels,
            node_taints=[f"{taint['key']}={taint['value']}:{taint['effect']}"],
            tags={TAG_UID: target.uid, TAG_NAME: target.name, TAG_NAMESPACE: target.namespace},
        )
    )


def _props(pool: models.AgentPool) -> Any:
    return pool.properties or models.AgentPoolManagedClusterAgentPoolProfileProperties()


def _failure_of(pool: models.AgentPool, instance_type: str) -> CloudFailure:
    props = _props(pool)
    error = props.status.provisioning_error if props.status else None
    code = error.code if error else None
    message = (error.message if error else None) or f"agent pool {pool.name} failed"
    return classify(code, message, instance_type=instance_type)


def _failure_of_error(exc: HttpResponseError, instance_type: str) -> CloudFailure:
    error = exc.error
    code = error.code if error else None
    message = (error.message if error else None) or exc.message or str(exc)
    return classify(code, message, instance_type=instance_type)


class AzureBackend:
    name = "azure"
    surges = False  # an agent pool scaled down removes a node of its own choosing
    creates_nodes = True
    has_objects = False  # agent pools live in ARM: orphans are looked for there

    def __init__(self, client: ContainerServiceClient, settings: AzureSettings) -> None:
        self._client = client
        self._settings = settings
        self._scope = (settings.resource_group, settings.cluster_name)

    async def prepare(self) -> None:
        return None

    def node_selector(self, target: NodeTarget) -> str | None:
        return naming.workspace_selector(target.namespace, target.name)

    async def _pools(self) -> list[models.AgentPool]:
        return [p async for p in self._client.agent_pools.list(*self._scope)]

    async def _follow(self, poller: Any) -> bool:
        """Wait for an operation up to operation_wait_s; True when it finished."""
        try:
            await asyncio.wait_for(poller.result(), self._settings.operation_wait_s)
        except TimeoutError:
            return False
        return True

    async def _delete(self, name: str) -> None:
        try:
            poller = await self._client.agent_pools.begin_delete(
                *self._scope, name, polling_interval=self._settings.polling_interval_s
            )
        except ResourceNotFoundError:
            return
        await self._follow(poller)

    async def ensure(self, target: NodeTarget, claims: Claims) -> Progress:
        wanted = naming.agent_pool_name(target.uid, target.instance_type)
        pool = None
        for found in await self._pools():
            tags = _props(found).tags or {}
            if tags.get(TAG_UID) != target.uid:
                continue
            if found.name == wanted:
                pool = found
            elif _props(found).provisioning_state != "Deleting":
                await self._delete(str(found.name))  # the SKU before a re-plan
        state = _props(pool).provisioning_state if pool is not None else None
        if state == "Failed" and pool is not None:
            return Progress(failure=_failure_of(pool, target.instance_type))
        if state in _BUSY:
            return Progress(waiting=[f"agent pool {wanted}: {state}"], poll=True)
        if pool is None or _props(pool).count != target.node_count:
            try:
                poller = await self._client.agent_pools.begin_create_or_update(
                    *self._scope,
                    wanted,
                    agent_pool(target, self._settings),
                    polling_interval=self._settings.polling_interval_s,
                )
                done = await self._follow(poller)
            except HttpResponseError as exc:
                return Progress(failure=_failure_of_error(exc, target.instance_type))
            if not done:
                verb = "Creating" if pool is None else "Scaling"
                return Progress(waiting=[f"agent pool {wanted}: {verb}"], poll=True)
        return Progress()

    async def discard(self, target: NodeTarget) -> None:
        await self._delete(naming.agent_pool_name(target.uid, target.instance_type))

    async def release(self, namespace: str, name: str, uid: str, claims: Claims) -> list[str]:
        left = []
        for pool in await self._pools():
            if (_props(pool).tags or {}).get(TAG_UID) != uid:
                continue
            if _props(pool).provisioning_state != "Deleting":
                await self._delete(str(pool.name))
            try:
                await self._client.agent_pools.get(*self._scope, str(pool.name))
            except ResourceNotFoundError:
                continue
            left.append(f"agent pool {pool.name}")
        return left

    async def remaining(self, namespace: str, name: str, uid: str) -> list[str]:
        return [
            f"agent pool {pool.name}"
            for pool in await self._pools()
            if (_props(pool).tags or {}).get(TAG_UID) == uid
        ]

    async def owned(self, claims: Claims) -> list[Owned]:
        found = []
        for pool in await self._pools():
            tags = _props(pool).tags or {}
            if TAG_UID in tags:
                found.append(
                    Owned(
                        kind="AgentPool",
                        name=str(pool.name),
                        namespace=tags.get(TAG_NAMESPACE, ""),
                        workspace=tags.get(TAG_NAME, ""),
                        uid=tags[TAG_UID],
                    )
                )
        return found

    async def remove(self, owned: Owned) -> None:
        await self._delete(owned.name)
