"""The deployer service: runs the inference workload on the Workspace's nodes.

One `reconcile(key)` per Workspace, level-triggered, reading the Workspace, its workload and its
pods from the service's view (kairyu_core.view, fed over NATS), never from the apiserver. When the
provisioner has reported the nodes for the current generation and plan, the objects of
`inference_manifests.objects` are applied by server-side apply, unless the view's workload already
carries their digest (`kairyu.io/applied-digest`); `inference_status.inference_verdict` turns the
workload and its pods into `InferenceReady`, written only when it differs from what the view's
Workspace says. Tuning Workspaces are the tuner's. A Workspace being deleted has its workload
deleted at once (the provisioner's finalizer keeps it while its nodes drain); the rest goes with it
by owner references.

A name another object holds is known from the view (the watcher's Occupants,
`kube.check_free`) before anything is applied. Reads of the apiserver left: an object this
process applied that was replaced since is read once (`kube.apply_owned`), and a StatefulSet
without any pod has its FailedCreate events read.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from kairyu_contracts.api import (
    ConditionStatus,
    ConditionType,
    Workspace,
)
from kairyu_contracts.api.workspace import AccessMode
from kairyu_contracts.catalog import Catalog
from kairyu_contracts.labels import (
    ALLOW_INGRESS_ANNOTATION,
    API_KEY_ANNOTATION,
    INFERENCESET_LABEL,
    MULTIROLE_LABEL,
    ROLE_LABEL,
)
from kairyu_contracts.objectstate import Kind, ObjectKey, trim
from kairyu_contracts.workloads import (
    MAX_MESSAGE,
    WorkloadError,
    check_owned,
    controller_uid,
)
from kairyu_core.kube import (
    Report,
    digest_of,
    errors,
    owner_of,
    resources,
)
from kairyu_core.workload_reconciler import WorkloadReconciler
from kairyu_deployer import inference_manifests
from kairyu_deployer.inference_status import (
    PENDING,
    InferenceVerdict,
    inference_verdict,
    replicas_status,
    succeeded,
)
from kairyu_deployer.settings import DeployerSettings

log = logging.getLogger(__name__)


_RESOURCES = {
    "ConfigMap": resources.CONFIGMAPS,
    "Service": resources.SERVICES,
    "NetworkPolicy": resources.NETWORKPOLICIES,
    "Deployment": resources.DEPLOYMENTS,
    "StatefulSet": resources.STATEFULSETS,
}
_WORKLOADS: tuple[Kind, ...] = ("Deployment", "StatefulSet")
_MIN_REQUEUE_S = 0.5  # never look again sooner than this, whatever the arithmetic says
_REFUSAL_POLL_S = 15.0  # a StatefulSet without pods: how often its FailedCreate events are read


def _age_s(workload: dict[str, Any] | None) -> float:
    """Seconds since the workload was created (0 for one not created yet)."""
    stamp = (workload or {}).get("metadata", {}).get("creationTimestamp")
    if not stamp:
        return 0.0
    created = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    return max((datetime.now(UTC) - created).total_seconds(), 0.0)


def inference_of(
    workspace: Workspace, raw: dict[str, Any], catalog: Catalog
) -> inference_manifests.Inference | None:
    """What to deploy, or None while there is nothing to deploy (not inference, nodes not ready).

    Raises workloads.WorkloadError for annotations that cannot be honoured.
    """
    meta, status, spec = workspace.metadata, workspace.status, workspace.inference
    if spec is None or status is None or status.plan is None or not workspace.nodes_ready():
        return None
    preset = catalog.preset(spec.preset.name) if spec.preset else None
    options = spec.preset.preset_options if spec.preset else None
    # A Hugging Face id has no preset: the base image, which downloads `--model` at start.
    image = preset.image if preset else catalog.base_image if spec.preset else ""
    if spec.preset and spec.preset.access_mode == AccessMode.PRIVATE and options and options.image:
        image = options.image
    annotations = meta.annotations or {}
    return inference_manifests.Inference(
        namespace=meta.namespace or "",
        name=meta.name or "",
        uid=meta.uid or "",
        api_version=raw.get("apiVersion", resources.WORKSPACES.api_version),
        kind=raw.get("kind", resources.WORKSPACES.kind),
        plan=status.plan,
        worker_nodes=list(status.worker_nodes or []),
        # From the report, not from the nodes the pods stay pinned to
        # (inference_manifests.kept_nodes).
        spare_node=len(status.worker_nodes or []) > status.plan.node_count,
        image=image,
        preset=preset,
        adapters=list(spec.adapters or []),
        config=spec.config,
        model_access_secret=options.model_access_secret if options else None,
        image_pull_secrets=list(options.image_pull_secrets or []) if options else [],
        template=spec.template,
        api_key_secret=annotations.get(API_KEY_ANNOTATION) or None,
        ingress_from=inference_manifests.ingress_namespaces(
            annotations.get(ALLOW_INGRESS_ANNOTATION)
        ),
        pod_labels={k: v for k, v in (meta.labels or {}).items() if k in _POD_LABELS and v},
    )


_POD_LABELS = frozenset({INFERENCESET_LABEL, MULTIROLE_LABEL, ROLE_LABEL})
"""Labels of a Workspace its pods carry too: an InferenceSet's, which selects its pods, and a
MultiRoleInference's with the role, which tell the runtime it is a prefill or decode server."""


def _invalid(exc: Exception) -> InferenceVerdict:
    return InferenceVerdict(False, "WorkloadInvalid", str(exc)[:1024])


class Deployer(WorkloadReconciler[DeployerSettings]):
    """Reconciles inference Workspaces from the view: their workload and InferenceReady."""

    verb = "deploy"
    kinds = _RESOURCES
    tracer_name = "kairyu.deployer"

    async def _reconcile(self, key: str, raw: dict[str, Any], workspace: Workspace) -> float | None:
        if workspace.inference is None:  # a tuning Workspace: the tuner's
            return None
        try:
            inference = inference_of(workspace, raw, self._catalog)
        except WorkloadError as exc:  # an annotation that cannot be honoured
            await self._write(raw, _invalid(exc), trace.get_current_span())
            return None
        if inference is None:  # nodes not ready for this generation and plan yet
            return None
        with self._rollout_span(
            "deploy", key, workspace, **{"kairyu.runtime": inference.plan.runtime}
        ) as span:
            again: float | None = None
            try:
                result, again = await self._deploy(key, inference)
            except (WorkloadError, errors.InvalidError) as exc:
                # A template the apiserver refuses, a name another object holds: retrying
                # cannot help, the Workspace (or the other object) has to change.
                result = _invalid(exc)
            if result is None:  # only waiting, and not for long yet: nothing to say
                return again
            if not result.ready and result.reason != PENDING:
                span.set_status(trace.StatusCode.ERROR, f"{result.reason}: {result.message}")
            await self._write(raw, result, span, inference)
            return again

    async def _deploy(
        self, key: str, inference: inference_manifests.Inference
    ) -> tuple[InferenceVerdict | None, float | None]:
        """Apply what differs from the view, delete the other kind of workload, and judge.

        The verdict is None while the workload is only waiting and younger than
        `pending_grace_s`; the second value is then when to judge again.
        """
        owner = inference.owner
        kind: Kind = "StatefulSet" if inference.multi_node else "Deployment"
        current = self._view.get(ObjectKey(kind, inference.namespace, inference.name))
        if current is not None:
            check_owned(current, owner)  # labelled with the Workspace, but someone else's
            self._children.remember(owner, kind, inference.name, current["metadata"]["uid"])
            inference = replace(
                inference, worker_nodes=inference_manifests.kept_nodes(inference, current)
            )
        built = inference_manifests.objects(inference, self._settings.workload)
        digest = self._stamp(built)
        workload, again = current, None
        if digest_of(current) != digest:
            settling = self._settling(key, owner)
            if settling is not None and settling[0].digest == digest:
                # Applied, and the view does not show it yet.
                workload, again = settling[0].workload, settling[1]
            else:
                # Kept as the view will hold it: the judgement reads no more, and a whole
                # Deployment per Workspace waiting to show would be most of this memory.
                workload = trim(kind, await self._apply(owner, built))
                self._remember(key, owner, digest, workload)
        else:
            self._applied.pop(key, None)
        await self._delete_other_kind(inference)
        pods = self._view.owned("Pod", key)
        result = inference_verdict(workload, pods)
        if not result.ready and result.reason == PENDING:
            # Only waiting: worth a write once it has waited a while (from the workload's
            # creation, as applied or as the view shows it).
            waited = _age_s(workload)
            grace = self._settings.pending_grace_s
            if waited < grace:
                left = max(grace - waited, _MIN_REQUEUE_S)
                return None, min(again, left) if again is not None else left
        if workload is not None and workload is current and not pods and result.reason == PENDING:
            # No pod at all: a StatefulSet says why only in an event (a Deployment has the
            # ReplicaFailure condition the verdict reads). Read only in this state, and only
            # for a workload the view shows (its controller has had a chance to act on it).
            meta = workload["metadata"]
            refusal = (
                await self._creation_refusal(meta["namespace"], meta["uid"])
                if workload.get("kind") == "StatefulSet"
                else None
            )
            if refusal is not None:
                result = InferenceVerdict(False, "FailedCreate", refusal[: MAX_MESSAGE * 4])
            elif workload.get("kind") == "StatefulSet":
                # An event announces nothing in the view: look again for a refusal, or a pod.
                again = min(again, _REFUSAL_POLL_S) if again is not None else _REFUSAL_POLL_S
        return result, again

    async def _delete_other_kind(self, inference: inference_manifests.Inference) -> None:
        """A plan that changed between one node and several changes the kind of workload.

        The other kind is deleted only when the view holds one this Workspace controls (uid
        precondition: exactly that one).
        """
        other: Kind = "Deployment" if inference.multi_node else "StatefulSet"
        found = self._view.get(ObjectKey(other, inference.namespace, inference.name))
        if found is not None and controller_uid(found) == inference.uid:
            await self._delete(other, found)

    async def _remove(self, key: str, raw: dict[str, Any]) -> None:
        """Stop the workload as soon as the Workspace is being deleted.

        The garbage collector would remove it once the Workspace is gone, but the provisioner's
        finalizer keeps the Workspace while its nodes drain, and a live Deployment would keep
        putting pods back on the draining nodes. Only objects the Workspace controls are deleted:
        the workloads the view holds, and the other objects this process applied (their uids
        known from the apply); whatever else there is goes with the Workspace.
        """
        owner = owner_of(raw)
        for kind in _WORKLOADS:
            for obj in self._view.owned(kind, key):
                if controller_uid(obj) == owner.uid:
                    await self._delete(kind, obj)
        for other, name in inference_manifests.other_names(owner.name):
            await self._delete_applied(owner, other, name)

    async def _write(
        self,
        raw: dict[str, Any],
        result: InferenceVerdict,
        span: trace.Span,
        inference: inference_manifests.Inference | None = None,
    ) -> None:
        reports = [
            Report(
                kind,
                ConditionStatus.TRUE if verdict.ready else ConditionStatus.FALSE,
                verdict.reason,
                verdict.message,
            )
            for kind, verdict in (
                (ConditionType.INFERENCE_READY, result),
                (ConditionType.WORKSPACE_SUCCEEDED, succeeded(result)),
            )
        ]
        fields: dict[str, Any] = {}
        if inference is not None:
            plan = inference.plan
            kind: Kind = "StatefulSet" if inference.multi_node else "Deployment"
            workload = self._view.get(ObjectKey(kind, inference.namespace, inference.name))
            nodes_each = plan.node_count // plan.replicas
            fields["inference"] = replicas_status(workload, nodes_each, inference.labels)
            fields["runtime"] = inference_manifests.runtime_status(
                inference, self._settings.workload
            )
        await self._report(raw, reports, span, fields)
