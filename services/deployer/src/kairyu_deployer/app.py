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
from kairyu_core.kube import KubeClient, Report, apply_owned, errors, report_conditions, resources
from kairyu_core.tracing import rollout_context
from kairyu_core.workloads import (
    MAX_MESSAGE,
    KnownChildren,
    OtherServices,
    Owner,
    WorkloadError,
    check_owned,
    controller_uid,
    refused_creation,
)
from kairyu_deployer import manifests
from kairyu_deployer.settings import DeployerSettings
from kairyu_deployer.status import PENDING, Verdict, verdict

log = logging.getLogger(__name__)
tracer = trace.get_tracer("kairyu.deployer")

CONSUMED: dict[str, type[Event]] = {
    e.event_name: e for e in (NodesReady, WorkspaceObserved, ObjectChanged)
}
_WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Pod"}
_RESOURCES = {
    "ConfigMap": resources.CONFIGMAPS,
    "Service": resources.SERVICES,
    "NetworkPolicy": resources.NETWORKPOLICIES,
    "Deployment": resources.DEPLOYMENTS,
    "StatefulSet": resources.STATEFULSETS,
}


def consumer_spec(settings: DeployerSettings, bus: Bus) -> ConsumerSpec:
    return ConsumerSpec.of_events(settings.service_name, CONSUMED.values(), bus.stream.subjects)


def inference_of(
    workspace: Workspace, raw: dict[str, Any], catalog: Catalog
) -> manifests.Inference | None:
    """What to deploy, or None while there is nothing to deploy (not inference, nodes not ready).

    Raises workloads.WorkloadError for annotations that cannot be honoured.
    """
    meta, status, spec = workspace.metadata, workspace.status, workspace.inference
    if spec is None or status is None or status.plan is None or not workspace.nodes_ready():
        return None
    preset = catalog.preset(spec.preset.name) if spec.preset else None
    options = spec.preset.preset_options if spec.preset else None
    image = preset.image if preset else ""
    if spec.preset and spec.preset.access_mode == AccessMode.PRIVATE and options and options.image:
        image = options.image
    annotations = meta.annotations or {}
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
        api_key_secret=annotations.get(manifests.API_KEY_ANNOTATION) or None,
        ingress_from=manifests.ingress_namespaces(
            annotations.get(manifests.ALLOW_INGRESS_ANNOTATION)
        ),
    )


async def refusal_of(kube: KubeClient, workload: dict[str, Any]) -> str | None:
    """Why the StatefulSet's controller could not create its pods, from its FailedCreate events."""
    if workload.get("kind") != "StatefulSet":
        return None
    meta = workload["metadata"]
    events = await kube.request(
        "GET",
        resources.EVENTS.path(namespace=meta["namespace"]),
        query={"fieldSelector": f"involvedObject.uid={meta['uid']},reason=FailedCreate"},
    )
    return refused_creation(list(events.get("items") or []))


def _invalid(exc: Exception) -> Verdict:
    return Verdict(False, "WorkloadInvalid", str(exc)[:1024])


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
        self._children = KnownChildren()

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
        try:
            inference = inference_of(workspace, raw, self._catalog)
        except WorkloadError as exc:  # an annotation that cannot be honoured
            await self._write(raw, _invalid(exc), trace.get_current_span())
            return
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
            try:
                result = await self._deploy(inference, apply=apply)
            except (WorkloadError, errors.InvalidError) as exc:
                # A template the apiserver refuses, a name another object holds: retrying
                # cannot help, the Workspace (or the other object) has to change.
                result = _invalid(exc)
            if not result.ready and result.reason != "WorkspaceInferenceStatusPending":
                span.set_status(trace.StatusCode.ERROR, f"{result.reason}: {result.message}")
            await self._write(raw, result, span)

    async def _deploy(self, inference: manifests.Inference, *, apply: bool) -> Verdict:
        """Apply (or only read) the workload, and judge it."""
        kind = "StatefulSet" if inference.multi_node else "Deployment"
        workload: dict[str, Any] | None = None
        if not apply:  # a pod or the workload changed: read it, and create it if it is missing
            try:
                workload = await self._kube.get(
                    _RESOURCES[kind], inference.name, namespace=inference.namespace
                )
            except errors.NotFoundError:
                workload = None
            else:
                check_owned(workload, inference.owner)
        if workload is None:
            workload = await self._apply(inference)
        pods = await self._kube.list(
            resources.PODS,
            namespace=inference.namespace,
            label_selector=f"{manifests.WORKSPACE_LABEL}={inference.name}",
        )
        items = list(pods.get("items") or [])
        result = verdict(workload, items)
        if not result.ready and result.reason == PENDING and not items:
            # No pod at all: a StatefulSet says why only in an event (a Deployment has the
            # ReplicaFailure condition the verdict reads). Read only in this state.
            refusal = await refusal_of(self._kube, workload)
            if refusal is not None:
                result = Verdict(False, "FailedCreate", refusal[: MAX_MESSAGE * 4])
        return result

    async def _apply(self, inference: manifests.Inference) -> dict[str, Any]:
        """Apply every object (each checked to be the Workspace's); the workload as applied."""
        applied: dict[str, Any] = {}
        for obj in manifests.objects(inference, self._settings.workload):
            applied = await self._apply_owned(inference.owner, obj)
        # A plan that changed between one node and several changes the kind of workload; the
        # other kind is deleted only if it is this Workspace's (uid precondition: that one).
        other = "Deployment" if inference.multi_node else "StatefulSet"
        try:
            found = await self._kube.get(
                _RESOURCES[other], inference.name, namespace=inference.namespace
            )
        except errors.NotFoundError:
            return applied
        if controller_uid(found) == inference.uid:
            with contextlib.suppress(errors.NotFoundError, errors.ConflictError):
                await self._kube.request(
                    "DELETE",
                    _RESOURCES[other].path(namespace=inference.namespace, name=inference.name),
                    body={"preconditions": {"uid": found["metadata"]["uid"]}},
                )
        return applied

    async def _apply_owned(self, owner: Owner, obj: dict[str, Any]) -> dict[str, Any]:
        return await apply_owned(
            self._kube,
            _RESOURCES[obj["kind"]],
            obj,
            owner=owner,
            children=self._children,
            field_manager=self._settings.service_name,
        )

    async def _remove(self, namespace: str, name: str, uid: str) -> None:
        """Stop the workload as soon as the Workspace is being deleted.

        The garbage collector would remove it once the Workspace is gone, but the provisioner's
        finalizer keeps the Workspace while its nodes drain, and a live Deployment would keep
        putting pods back on the draining nodes. Only objects the Workspace controls are deleted.
        """
        for resource in _RESOURCES.values():
            listed = await self._kube.list(
                resource, namespace=namespace, label_selector=f"{manifests.WORKSPACE_LABEL}={name}"
            )
            for item in listed.get("items") or []:
                if controller_uid(item) == uid:
                    with contextlib.suppress(errors.NotFoundError, errors.ConflictError):
                        await self._kube.request(
                            "DELETE",
                            resource.path(namespace=namespace, name=item["metadata"]["name"]),
                            body={"preconditions": {"uid": item["metadata"]["uid"]}},
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
