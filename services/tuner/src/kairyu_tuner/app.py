"""The tuner service: runs a tuning Workspace's Job on its nodes and reports how it went.

Level-triggered, like the deployer. Once the provisioner has reported the nodes for the current
generation, the user's training config (if any) is checked, then the ConfigMap and Job of
`manifests.objects` are applied; every change of the Job or its pods becomes JobStarted and
WorkspaceSucceeded through `status.tuning_status`. A Job whose pod template no longer matches the
Workspace is replaced (the template is immutable). Inference Workspaces are the deployer's.
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
from kairyu_core.bus import Bus, ConsumerSpec, Delivery, TemporaryError
from kairyu_core.catalog import Catalog, Preset
from kairyu_core.events import Event, NodesReady, ObjectChanged, WorkspaceObserved
from kairyu_core.kube import KubeClient, Report, apply_owned, errors, report_conditions, resources
from kairyu_core.tracing import rollout_context
from kairyu_core.workloads import (
    WORKSPACE_LABEL,
    KnownChildren,
    OtherServices,
    Owner,
    WorkloadError,
    check_owned,
    redact_urls,
    refused_creation,
)
from kairyu_tuner import manifests
from kairyu_tuner.settings import TunerSettings
from kairyu_tuner.status import FAILED, PENDING, TuningStatus, tuning_status
from kairyu_tuner.status import Report as TuningReport
from kairyu_tuner.training_config import CONFIG_KEY, ConfigError, check

log = logging.getLogger(__name__)
tracer = trace.get_tracer("kairyu.tuner")

CONSUMED: dict[str, type[Event]] = {
    e.event_name: e for e in (NodesReady, WorkspaceObserved, ObjectChanged)
}
_CHILD_KINDS = {"Job", "Pod"}
_RESOURCES = {"ConfigMap": resources.CONFIGMAPS, "Job": resources.JOBS}


def consumer_spec(settings: TunerSettings, bus: Bus) -> ConsumerSpec:
    return ConsumerSpec.of_events(settings.service_name, CONSUMED.values(), bus.stream.subjects)


def tuning_of(
    workspace: Workspace, raw: dict[str, Any], preset: Preset, output_dir: str
) -> manifests.Tuning | None:
    """What to run, or None while there is nothing to run (not tuning, nodes not ready)."""
    meta, status, spec = workspace.metadata, workspace.status, workspace.tuning
    if spec is None or status is None or status.plan is None or not workspace.nodes_ready():
        return None
    options = spec.preset.preset_options
    return manifests.Tuning(
        owner=Owner(
            namespace=meta.namespace or "",
            name=meta.name or "",
            uid=meta.uid or "",
            api_version=raw.get("apiVersion", resources.WORKSPACES.api_version),
            kind=raw.get("kind", resources.WORKSPACES.kind),
        ),
        plan=status.plan,
        worker_nodes=list(status.worker_nodes or []),
        preset=preset,
        method=spec.method,
        output_dir=output_dir,
        config=spec.config,
        urls=list(spec.input.urls or []),
        input_image=spec.input.image,
        input_volume=spec.input.volume_source,
        output_image=spec.output.image,
        output_volume=spec.output.volume_source,
        push_secret=spec.output.image_push_secret,
        image_pull_secrets=[
            *(options.image_pull_secrets or [] if options else []),
            *(spec.input.image_pull_secrets or []),
        ],
        model_access_secret=options.model_access_secret if options else None,
    )


class Tuner:
    """Handles the tuner's events."""

    def __init__(
        self, *, settings: TunerSettings, bus: Bus, kube: KubeClient, catalog: Catalog
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._kube = kube
        self._catalog = catalog
        self._inference = OtherServices()
        self._children = KnownChildren()

    async def handle(self, event: Event, delivery: Delivery) -> None:
        """The consumer's handler."""
        if isinstance(event, ObjectChanged) and event.kind not in _CHILD_KINDS:
            return
        ref = event.workspace
        if self._settings.namespace and ref.namespace != self._settings.namespace:
            return
        if self._inference.handle_elsewhere(ref.uid, ref.generation):
            return
        try:
            await self.reconcile(ref.namespace, ref.name, uid=ref.uid)
        except errors.KubeError as exc:
            raise TemporaryError(f"cannot tune {ref.key}: {exc}", delay=5.0) from exc

    async def reconcile(self, namespace: str, name: str, *, uid: str) -> None:
        try:
            raw = await self._kube.get(resources.WORKSPACES, name, namespace=namespace)
        except errors.NotFoundError:
            return
        if raw["metadata"].get("uid") != uid or raw["metadata"].get("deletionTimestamp"):
            return
        try:
            workspace = parse_workspace(raw)
        except ValidationError:
            return
        if workspace.tuning is None:
            self._inference.remember(uid, workspace.metadata.generation or 0)
            return
        if not workspace.nodes_ready():
            return
        with tracer.start_as_current_span(
            "tune",
            context=rollout_context(workspace.metadata.annotations),
            attributes={
                "kairyu.workspace": f"{namespace}/{name}",
                "kairyu.generation": workspace.metadata.generation or 0,
                "kairyu.tuning.method": workspace.tuning.method.lower(),
            },
        ) as span:
            result = await self._run(workspace, raw, namespace, name)
            if not result.job_started.status and result.job_started.reason != PENDING:
                span.set_status(
                    trace.StatusCode.ERROR,
                    redact_urls(f"{result.job_started.reason}: {result.job_started.message}"),
                )
            await self._write(raw, result, span)

    async def _run(
        self, workspace: Workspace, raw: dict[str, Any], namespace: str, name: str
    ) -> TuningStatus:
        spec = workspace.tuning
        assert spec is not None  # noqa: S101 - checked by the caller
        preset = self._catalog.preset(spec.preset.name)
        if preset is None:  # the planner refuses these first; a catalog change can still get here
            unknown = f"preset {spec.preset.name} is not in kairyu's catalog"
            return TuningStatus(
                TuningReport(False, "UnknownPreset", unknown), TuningReport(False, PENDING, unknown)
            )
        try:
            output_dir = await self._output_dir(namespace, spec.config, spec.method)
        except ConfigError as exc:
            bad = TuningReport(False, "InvalidTuningConfig", str(exc)[:1024])
            return TuningStatus(
                bad, TuningReport(False, PENDING, "waiting for a usable tuning config")
            )
        tuning = tuning_of(workspace, raw, preset, output_dir)
        if tuning is None:
            return tuning_status(None, [])
        try:
            job = await self._ensure(tuning)
        except (WorkloadError, errors.InvalidError) as exc:
            # A name another object holds, or a Job the apiserver refuses (422: a field of the
            # Workspace it cannot take): the same request would fail again, so it is not retried.
            message = f"the tuning job cannot be created: {exc}"[:1024]
            return TuningStatus(
                TuningReport(False, "WorkloadInvalid", message),
                TuningReport(False, FAILED, message),
            )
        pods = await self._kube.list(
            resources.PODS, namespace=namespace, label_selector=f"{WORKSPACE_LABEL}={name}"
        )
        owned = [
            p
            for p in pods.get("items") or []
            if job is not None
            and any(
                o.get("uid") == job["metadata"].get("uid")
                for o in p["metadata"].get("ownerReferences") or []
            )
        ]
        result = tuning_status(job, owned)
        if job is not None and not owned and result.job_started.reason == PENDING:
            # No pod at all: the Job's controller says why (admission refused it) only in an
            # event. Read only in this state.
            events = await self._kube.request(
                "GET",
                resources.EVENTS.path(namespace=namespace),
                query={
                    "fieldSelector": f"involvedObject.uid={job['metadata']['uid']},"
                    "reason=FailedCreate"
                },
            )
            refusal = refused_creation(list(events.get("items") or []))
            if refusal is not None:
                stuck = TuningReport(False, "FailedCreate", refusal[:1024])
                return TuningStatus(stuck, TuningReport(False, PENDING, refusal[:1024]))
        return result

    async def _output_dir(self, namespace: str, config: str | None, method: str) -> str:
        """The config's output_dir, after checking the user's config; KAITO's default otherwise."""
        if config is None:
            return manifests.RESULTS_DIR
        try:
            found = await self._kube.get(resources.CONFIGMAPS, config, namespace=namespace)
        except errors.NotFoundError:
            raise ConfigError(f"ConfigMap {namespace}/{config} (tuning.config) not found") from None
        text = (found.get("data") or {}).get(CONFIG_KEY)
        if text is None:
            raise ConfigError(f"ConfigMap {namespace}/{config} has no {CONFIG_KEY} key")
        return check(text, method)

    async def _ensure(self, tuning: manifests.Tuning) -> dict[str, Any] | None:
        """The Job, created (or replaced when the Workspace changed what it must run)."""
        built = manifests.objects(tuning, self._settings.job)
        for obj in built[:-1]:
            await self._apply_owned(tuning.owner, obj)
        wanted = built[-1]
        namespace = tuning.owner.namespace
        try:
            current = await self._kube.get(resources.JOBS, tuning.name, namespace=namespace)
        except errors.NotFoundError:
            current = None
        if current is not None:
            check_owned(current, tuning.owner)  # never replace someone else's Job of that name
            annotations = current["metadata"].get("annotations") or {}
            same = (
                annotations.get(manifests.SPEC_ANNOTATION)
                == (wanted["metadata"]["annotations"][manifests.SPEC_ANNOTATION])
            )
            if same or current["metadata"].get("deletionTimestamp"):
                return current if same else None
            log.info("replacing tuning job %s/%s: the Workspace changed", namespace, tuning.name)
            with contextlib.suppress(errors.NotFoundError, errors.ConflictError):
                await self._kube.request(
                    "DELETE",
                    resources.JOBS.path(namespace=namespace, name=tuning.name),
                    # uid precondition: the Job checked above, not one created since.
                    body={
                        "propagationPolicy": "Foreground",
                        "preconditions": {"uid": current["metadata"]["uid"]},
                    },
                )
            return None  # the Job's deletion comes back as an event, and then it is created
        created = await self._kube.apply(
            resources.JOBS, wanted, field_manager=self._settings.service_name
        )
        return dict(created)

    async def _apply_owned(self, owner: Owner, obj: dict[str, Any]) -> dict[str, Any]:
        return await apply_owned(
            self._kube,
            _RESOURCES[obj["kind"]],
            obj,
            owner=owner,
            children=self._children,
            field_manager=self._settings.service_name,
        )

    async def _write(self, raw: dict[str, Any], result: TuningStatus, span: trace.Span) -> None:
        def condition(kind: ConditionType, report: TuningReport) -> Report:
            status = ConditionStatus.TRUE if report.status else ConditionStatus.FALSE
            # Signed URLs carry their token in the query string; conditions are widely readable.
            return Report(kind, status, report.reason, redact_urls(report.message))

        await report_conditions(
            self._kube,
            raw,
            [
                condition(ConditionType.JOB_STARTED, result.job_started),
                condition(ConditionType.WORKSPACE_SUCCEEDED, result.succeeded),
            ],
            field_manager=self._settings.service_name,
            on_transition=lambda r: span.add_event(
                "condition", {"type": r.type, "status": r.status.value, "reason": r.reason}
            ),
        )
