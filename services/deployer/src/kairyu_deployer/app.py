"""The deployer service: runs the inference workload on the Workspace's nodes.

Level-triggered. When the provisioner has reported the nodes (ResourceReady=True and
status.workerNodes for the current generation), the objects of `manifests.objects` are applied by
server-side apply (an unchanged object is a no-op at the apiserver); on every change of the
workload or its pods, `status.verdict` turns them into `InferenceReady`. Tuning Workspaces are the
tuner's; deleted Workspaces' objects are removed by Kubernetes' garbage collector (owner
references), so there is nothing to clean up here.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from opentelemetry import trace
from pydantic import ValidationError

from kairyu_core.api import (
    ConditionStatus,
    ConditionType,
    Workspace,
    parse_workspace,
)
from kairyu_core.api.workspace import AccessMode
from kairyu_core.bus import Bus, ConsumerSpec, Delivery, TemporaryError
from kairyu_core.catalog import Catalog
from kairyu_core.events import Event, NodesReady, ObjectChanged, WorkspaceObserved
from kairyu_core.kube import KubeClient, Report, errors, report_conditions, resources
from kairyu_core.tracing import rollout_context
from kairyu_core.workloads import OtherServices
from kairyu_deployer import manifests
from kairyu_deployer.settings import DeployerSettings
from kairyu_deployer.status import Verdict, verdict

log = logging.getLogger(__name__)
tracer = trace.get_tracer("kairyu.deployer")

CONSUMED: dict[str, type[Event]] = {
    e.event_name: e for e in (NodesReady, WorkspaceObserved, ObjectChanged)
}
_WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Pod"}
_RESOURCES = {
    "ConfigMap": resources.CONFIGMAPS,
    "Service": resources.SERVICES,
    "Deployment": resources.DEPLOYMENTS,
    "StatefulSet": resources.STATEFULSETS,
}


def consumer_spec(settings: DeployerSettings, bus: Bus) -> ConsumerSpec:
    return ConsumerSpec.of_events(settings.service_name, CONSUMED.values(), bus.stream.subjects)


def inference_of(
    workspace: Workspace, raw: dict[str, Any], catalog: Catalog
) -> manifests.Inference | None:
    """What to deploy, or None while there is nothing to deploy (not inference, nodes not ready)."""
    meta, status, spec = workspace.metadata, workspace.status, workspace.inference
    if spec is None or status is None or status.plan is None or not workspace.nodes_ready():
        return None
    preset = catalog.preset(spec.preset.name) if spec.preset else None
    options = spec.preset.preset_options if spec.preset else None
    image = preset.image if preset else ""
    if spec.preset and spec.preset.access_mode == AccessMode.PRIVATE and options and options.image:
        image = options.image
    return manifests.Inference(
        namespace=meta.namespace or "",
        name=meta.name or "",
        uid=meta.uid or "",
        api_version=raw.get("apiVersion", resources.WORKSPACES.api_version),
        kind=raw.get("kind", resources.WORKSPACES.kind),
        plan=status.plan,
        worker_nodes=list(status.worker_nodes or []),
        image=image,
        preset=preset,
        adapters=list(spec.adapters or []),
        config=spec.config,
        model_access_secret=options.model_access_secret if options else None,
        image_pull_secrets=list(options.image_pull_secrets or []) if options else [],
        template=spec.template,
    )


class Deployer:
    """Handles the deployer's events."""

    def __init__(
        self, *, settings: DeployerSettings, bus: Bus, kube: KubeClient, catalog: Catalog
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._kube = kube
        self._catalog = catalog
        self._tuning = OtherServices()

    async def handle(self, event: Event, delivery: Delivery) -> None:
        """The consumer's handler."""
        if isinstance(event, ObjectChanged) and event.kind not in _WORKLOAD_KINDS:
            return
        ref = event.workspace
        if self._tuning.handle_elsewhere(ref.uid, ref.generation):
            return
        try:
            await self.reconcile(
                ref.namespace, ref.name, uid=ref.uid, apply=not isinstance(event, ObjectChanged)
            )
        except errors.KubeError as exc:
            raise TemporaryError(f"cannot deploy {ref.key}: {exc}", delay=5.0) from exc

    async def reconcile(self, namespace: str, name: str, *, uid: str, apply: bool) -> None:
        try:
            raw = await self._kube.get(resources.WORKSPACES, name, namespace=namespace)
        except errors.NotFoundError:
            return
        if raw["metadata"].get("uid") != uid:
            return
        if raw["metadata"].get("deletionTimestamp"):
            await self._remove(namespace, name, uid)
            return
        try:
            workspace = parse_workspace(raw)
        except ValidationError:
            return
        if workspace.inference is None:
            self._tuning.remember(uid, workspace.metadata.generation or 0)
            return
        inference = inference_of(workspace, raw, self._catalog)
        if inference is None:
            return
        with tracer.start_as_current_span(
            "deploy",
            context=rollout_context(workspace.metadata.annotations),
            attributes={
                "kairyu.workspace": f"{namespace}/{name}",
                "kairyu.generation": workspace.metadata.generation or 0,
                "kairyu.runtime": inference.plan.runtime,
            },
        ) as span:
            if apply:
                try:
                    await self._apply(inference)
                except errors.InvalidError as exc:
                    # e.g. a user's inference.template the apiserver refuses: retrying cannot help.
                    result = Verdict(False, "WorkloadInvalid", str(exc)[:1024])
                    span.set_status(trace.StatusCode.ERROR, f"{result.reason}: {result.message}")
                    await self._write(raw, result, span)
                    return
            kind = "StatefulSet" if inference.multi_node else "Deployment"
            try:
                workload = await self._kube.get(_RESOURCES[kind], name, namespace=namespace)
            except errors.NotFoundError:
                workload = None
                if not apply:  # a pod changed before the workload exists: create it now
                    await self._apply(inference)
            pods = await self._kube.list(
                resources.PODS,
                namespace=namespace,
                label_selector=f"{manifests.WORKSPACE_LABEL}={name}",
            )
            result = verdict(workload, list(pods.get("items") or []))
            if not result.ready and result.reason != "WorkspaceInferenceStatusPending":
                span.set_status(trace.StatusCode.ERROR, f"{result.reason}: {result.message}")
            await self._write(raw, result, span)

    async def _apply(self, inference: manifests.Inference) -> None:
        for obj in manifests.objects(inference, self._settings.workload):
            await self._kube.apply(
                _RESOURCES[obj["kind"]], obj, field_manager=self._settings.service_name
            )
        # A plan that changed between one node and several changes the kind of workload.
        other = "Deployment" if inference.multi_node else "StatefulSet"
        with contextlib.suppress(errors.NotFoundError):
            await self._kube.delete(
                _RESOURCES[other], inference.name, namespace=inference.namespace
            )

    async def _remove(self, namespace: str, name: str, uid: str) -> None:
        """Stop the workload as soon as the Workspace is being deleted.

        The garbage collector would remove it once the Workspace is gone, but the provisioner's
        finalizer keeps the Workspace while its nodes drain, and a live Deployment would keep
        putting pods back on the draining nodes.
        """
        for resource in _RESOURCES.values():
            listed = await self._kube.list(
                resource, namespace=namespace, label_selector=f"{manifests.WORKSPACE_LABEL}={name}"
            )
            for item in listed.get("items") or []:
                owners = item["metadata"].get("ownerReferences") or []
                if any(o.get("uid") == uid for o in owners):
                    with contextlib.suppress(errors.NotFoundError):
                        await self._kube.delete(
                            resource, item["metadata"]["name"], namespace=namespace
                        )

    async def _write(self, raw: dict[str, Any], result: Verdict, span: trace.Span) -> None:
        status = ConditionStatus.TRUE if result.ready else ConditionStatus.FALSE
        report = Report(ConditionType.INFERENCE_READY, status, result.reason, result.message)
        await report_conditions(
            self._kube,
            raw,
            [report],
            field_manager=self._settings.service_name,
            on_transition=lambda r: span.add_event(
                "condition", {"type": r.type, "status": r.status.value, "reason": r.reason}
            ),
        )
