"""A local Azure Resource Manager endpoint for AKS agent pools, for the real azure-mgmt SDK.

Nothing of Azure runs here, so this speaks the part of the ARM wire protocol kairyu's Azure
backend uses, as the SDK expects it: the AgentPools REST resource (PUT / GET / list / DELETE under
`.../managedClusters/<cluster>/agentPools`), long-running operations announced with
`Azure-AsyncOperation` and polled until `Succeeded` or `Failed`, ARM's error body, and a failed
pool's `properties.status.provisioningError`. When a pool succeeds it creates the pool's nodes in
the local cluster (kwok nodes with AKS's labels, the pool's labels and taints, and the SKU's GPUs),
so the rest of a rollout proceeds; deleting or shrinking the pool deletes them.

`deny(vm_size, code)` makes creating pools of that VM size fail as Azure would, e.g. QuotaExceeded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from kairyu_contracts.catalog import Catalog, load_catalog
from kairyu_core.kube import KubeClient, errors, resources
from kairyu_localenv.nodes import GpuNodeSpec, gpu_node_manifest
from kairyu_localenv.processes import free_port

_POOLS = (
    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService"
    "/managedClusters/{cluster}/agentPools"
)
_OPERATIONS = (
    "/subscriptions/{sub}/providers/Microsoft.ContainerService/locations/{loc}/operations/{op}"
)
_POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
LOCATION = "eastus"


@dataclass
class _Operation:
    status: str = "InProgress"
    error: dict[str, str] | None = None


@dataclass
class FakeArm:
    """The endpoint's state and its aiohttp application."""

    kube: KubeClient
    catalog: Catalog = field(default_factory=load_catalog)
    operation_delay_s: float = 0.3
    """How long each create, scale or delete takes before its operation completes."""
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    """Every request as "METHOD path", for tests that count calls."""
    _denied: dict[str, str] = field(default_factory=dict)
    _operations: dict[str, _Operation] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _runner: web.AppRunner | None = None

    def deny(self, vm_size: str, code: str = "QuotaExceeded") -> None:
        """Make pools of `vm_size` fail with `code` from now on."""
        self._denied[vm_size.lower()] = code

    # ------------------------------------------------------------------ server
    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get(_POOLS, self._list)
        app.router.add_get(_POOLS + "/{pool}", self._get)
        app.router.add_put(_POOLS + "/{pool}", self._put)
        app.router.add_delete(_POOLS + "/{pool}", self._delete)
        app.router.add_get(_OPERATIONS, self._operation)
        app.router.add_get("/healthz", self._health)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 picks a free port); return the base URL."""
        port = port or free_port()
        self._runner = web.AppRunner(self.application())
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ handlers
    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def _record(self, request: web.Request) -> None:
        self.requests.append(f"{request.method} {request.path}")

    async def _list(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({"value": list(self.pools.values())})

    async def _get(self, request: web.Request) -> web.Response:
        self._record(request)
        pool = self.pools.get(request.match_info["pool"])
        if pool is None:
            return _error(404, "NotFound", f"agent pool {request.match_info['pool']} not found")
        return web.json_response(pool)

    async def _put(self, request: web.Request) -> web.Response:
        self._record(request)
        name = request.match_info["pool"]
        if not _POOL_NAME.match(name):
            return _error(
                400,
                "InvalidParameter",
                f"Agent pool name {name!r} is invalid: it must match ^[a-z][a-z0-9]{{0,11}}$",
            )
        body = await request.json()
        props = dict(body.get("properties") or {})
        vm_size = str(props.get("vmSize") or "")
        sku = self.catalog.sku(vm_size)
        if sku is None:
            return _error(400, "VMSizeNotSupported", f"The VM size {vm_size} is not supported.")
        existing = self.pools.get(name)
        if existing is not None and existing["properties"]["provisioningState"] in {
            "Creating",
            "Scaling",
            "Deleting",
        }:
            return _error(
                409,
                "OperationNotAllowed",
                f"an operation on agent pool {name} is in progress; try again later",
            )
        previous = int(existing["properties"].get("count") or 0) if existing else 0
        props["provisioningState"] = "Creating" if existing is None else "Scaling"
        props.pop("status", None)
        pool = {
            "id": request.path,
            "name": name,
            "type": "Microsoft.ContainerService/managedClusters/agentPools",
            "properties": props,
        }
        self.pools[name] = pool
        op_id, url = self._operation_for(request)
        code = self._denied.get(vm_size.lower())
        self._spawn(self._finish_put(name, op_id, previous, code, request.match_info))
        status = 201 if existing is None else 200
        return web.json_response(pool, status=status, headers={"Azure-AsyncOperation": url})

    async def _delete(self, request: web.Request) -> web.Response:
        self._record(request)
        name = request.match_info["pool"]
        pool = self.pools.get(name)
        if pool is None:
            return web.Response(status=204)
        pool["properties"]["provisioningState"] = "Deleting"
        op_id, url = self._operation_for(request)
        self._spawn(self._finish_delete(name, op_id))
        return web.Response(status=202, headers={"Azure-AsyncOperation": url, "Location": url})

    async def _operation(self, request: web.Request) -> web.Response:
        self._record(request)
        op_id = request.match_info["op"]
        op = self._operations.get(op_id)
        if op is None:
            return _error(404, "NotFound", f"operation {op_id} not found")
        body: dict[str, Any] = {"id": request.path, "name": op_id, "status": op.status}
        if op.error:
            body["error"] = op.error
        return web.json_response(body)

    # ------------------------------------------------------------------ operations
    def _operation_for(self, request: web.Request) -> tuple[str, str]:
        op_id = str(uuid.uuid4())
        self._operations[op_id] = _Operation()
        path = _OPERATIONS.format(sub=request.match_info["sub"], loc=LOCATION, op=op_id)
        version = request.query.get("api-version", "")
        return op_id, f"{request.scheme}://{request.host}{path}?api-version={version}"

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_put(
        self, name: str, op_id: str, previous: int, code: str | None, where: Any
    ) -> None:
        await asyncio.sleep(self.operation_delay_s)
        pool = self.pools[name]
        props = pool["properties"]
        op = self._operations[op_id]
        if code is not None:
            error = {"code": code, "message": _refusal(code, props, where)}
            props["provisioningState"] = "Failed"
            props["status"] = {"provisioningError": error}
            op.status, op.error = "Failed", error
            return
        try:
            await self._sync_nodes(name, props, previous)
        except errors.KubeError as exc:
            error = {"code": "InternalServerError", "message": f"could not create nodes: {exc}"}
            props["provisioningState"] = "Failed"
            props["status"] = {"provisioningError": error}
            op.status, op.error = "Failed", error
            return
        props["provisioningState"] = "Succeeded"
        op.status = "Succeeded"

    async def _finish_delete(self, name: str, op_id: str) -> None:
        await asyncio.sleep(self.operation_delay_s)
        pool = self.pools.get(name)
        if pool is not None:
            await self._sync_nodes(name, pool["properties"], int(pool["properties"]["count"]), 0)
            del self.pools[name]
        self._operations[op_id].status = "Succeeded"

    # ------------------------------------------------------------------ nodes
    def node_name(self, pool: str, index: int) -> str:
        vmss = int(hashlib.sha256(pool.encode()).hexdigest()[:8], 16) % 10**8
        return f"aks-{pool}-{vmss:08d}-vmss{index:06x}"

    async def _sync_nodes(
        self, pool: str, props: dict[str, Any], previous: int, count: int | None = None
    ) -> None:
        wanted = int(props.get("count") or 0) if count is None else count
        for index in range(wanted):
            with contextlib.suppress(errors.ConflictError):
                await self.kube.request(
                    "POST", resources.NODES.path(), body=self._node(pool, props, index)
                )
        for index in range(wanted, max(previous, wanted)):
            with contextlib.suppress(errors.NotFoundError):
                await self.kube.delete(resources.NODES, self.node_name(pool, index))

    def _node(self, pool: str, props: dict[str, Any], index: int) -> dict[str, Any]:
        sku = self.catalog.sku(str(props["vmSize"]))
        assert sku is not None  # checked when the pool was accepted  # noqa: S101
        spec = GpuNodeSpec(
            instance_type=sku.name,
            gpu_product=sku.gpu_model.replace(" ", "-"),
            gpu_count=sku.gpu_count,
            gpu_memory_mib=int(sku.gpu_memory_gib * 1024),
            cpu=str(12 * sku.gpu_count),
            memory=f"{110 * sku.gpu_count}Gi",
            ephemeral_storage=f"{int(props.get('osDiskSizeGB') or 128)}Gi",
        )
        taints = []
        for taint in props.get("nodeTaints") or []:
            key_value, _, effect = str(taint).partition(":")
            key, _, value = key_value.partition("=")
            taints.append({"key": key, "value": value, "effect": effect})
        labels = {
            **(props.get("nodeLabels") or {}),
            "agentpool": pool,
            "kubernetes.azure.com/agentpool": pool,
            "kubernetes.azure.com/mode": str(props.get("mode") or "User").lower(),
        }
        return gpu_node_manifest(self.node_name(pool, index), spec, labels=labels, taints=taints)


def _refusal(code: str, props: dict[str, Any], where: Any) -> str:
    """The message Azure gives for `code`, in AKS's words."""
    vm_size, count = props.get("vmSize"), int(props.get("count") or 1)
    if code == "QuotaExceeded":
        return (
            f"Preflight validation check for resource(s) for container service "
            f"{where['cluster']} in resource group {where['rg']} failed. Message: Operation could "
            f"not be completed as it results in exceeding approved {vm_size} family Cores quota. "
            f"Additional details - Deployment Model: Resource Manager, Location: {LOCATION}, "
            f"Current Limit: 0, Current Usage: 0, Additional Required: {count}."
        )
    if code in {"AllocationFailed", "ZonalAllocationFailed"}:
        return (
            f"Allocation failed. We do not have sufficient capacity for the requested VM size "
            f"{vm_size} in this region."
        )
    return f"The requested VM size {vm_size} is currently not available in location {LOCATION}."


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def _serve(kubeconfig: Path, port: int, denied: list[str]) -> None:
    async with await KubeClient.connect(kubeconfig) as kube:
        arm = FakeArm(kube)
        for vm_size in denied:
            arm.deny(vm_size)
        await arm.start(port=port)
        try:
            await asyncio.Event().wait()  # until SIGTERM
        finally:
            await arm.stop()


def main() -> None:
    """`python -m kairyu_localenv.fake_arm`: serve for `make dev --backend azure`."""
    parser = argparse.ArgumentParser(description="local ARM endpoint for AKS agent pools")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--deny", action="append", default=[], help="VM size whose pools fail with QuotaExceeded"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.kubeconfig, args.port, args.deny))


if __name__ == "__main__":
    main()
