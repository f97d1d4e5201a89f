"""The tuner service: runs a tuning Workspace's Job on its nodes and reports how it went.

One `reconcile(key)` per Workspace, level-triggered like the deployer's, reading the Workspace, its
Job and the Job's pods from the service's view (kairyu_core.view, fed over NATS). Once the
provisioner has reported the nodes for the current generation and plan, the user's training config
(if any) is checked, then the ConfigMap and Job of `tuning_manifests.objects` are applied, unless
the view's Job already carries their digest (`kairyu.io/applied-digest`); the Job and its pods
become JobStarted and WorkspaceSucceeded through `tuning_status.tuning_status`, written only when
they differ from what the view's Workspace says. A Job whose pod template no longer matches the
Workspace is replaced (the template is immutable). Inference Workspaces are the deployer's. A
Workspace being deleted has its Job deleted at once (its nodes are draining).

Reads of the apiserver left: the user's `tuning.config` ConfigMap (not in the view), once per
Workspace generation and process while it is valid; an object this process applied that was
replaced since, once (`kube.apply_owned`; a name another object holds is known from the view's
Occupants, `kube.check_free`); and a Job without any pod has its FailedCreate events read.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace

from kairyu_contracts import childnames
from kairyu_contracts.api import (
    ConditionStatus,
    ConditionType,
    Workspace,
)
from kairyu_contracts.api.conditions import SucceededReason
from kairyu_contracts.catalog import Catalog, Preset
from kairyu_contracts.objectstate import ObjectKey
from kairyu_contracts.tuning import CONFIG_KEY, TrainingConfigError
from kairyu_contracts.workloads import (
    WorkloadError,
    check_owned,
    controller_uid,
    redact_urls,
)
from kairyu_core.bus import TemporaryError
from kairyu_core.kube import (
    KubeClient,
    Report,
    digest_of,
    errors,
    owner_of,
    resources,
)
from kairyu_core.view import View
from kairyu_core.workload_reconciler import WorkloadReconciler
from kairyu_tuner import tuning_manifests
from kairyu_tuner.settings import TunerSettings
from kairyu_tuner.training_config import check
from kairyu_tuner.tuning_status import TuningReport, TuningStatus, tuning_status

log = logging.getLogger(__name__)


_RESOURCES = {"ConfigMap": resources.CONFIGMAPS, "Job": resources.JOBS}
_CACHE_LIMIT = 10_000  # checked configs remembered (oldest forgotten first)


def tuning_of(
    workspace: Workspace, raw: dict[str, Any], preset: Preset, output_dir: str
) -> tuning_manifests.Tuning | None:
    """What to run, or None while there is nothing to run (not tuning, nodes not ready)."""
    status, spec = workspace.status, workspace.tuning
    if spec is None or status is None or status.plan is None or not workspace.nodes_ready():
        return None
    options = spec.preset.preset_options
    return tuning_manifests.Tuning(
        owner=owner_of(raw),
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


class Tuner(WorkloadReconciler[TunerSettings]):
    """Reconciles tuning Workspaces from the view: their Job, JobStarted and WorkspaceSucceeded."""

    verb = "tune"
    kinds = _RESOURCES
    tracer_name = "kairyu.tuner"

    def __init__(
        self, *, settings: TunerSettings, kube: KubeClient, view: View, catalog: Catalog
    ) -> None:
        super().__init__(settings=settings, kube=kube, view=view, catalog=catalog)
        # (Workspace uid, generation, config, method) → the checked config's output_dir
        self._configs: dict[tuple[str, int, str, str], str] = {}

    def _handles(self, raw: dict[str, Any]) -> bool:
        return bool(raw.get("tuning"))  # an inference Workspace (most): not worth parsing

    async def _reconcile(self, key: str, raw: dict[str, Any], workspace: Workspace) -> float | None:
        if workspace.tuning is None:  # an inference Workspace: the deployer's
            return None
        if not workspace.nodes_ready():
            return None
        with self._rollout_span(
            "tune", key, workspace, **{"kairyu.tuning.method": workspace.tuning.method.lower()}
        ) as span:
            result, again = await self._run(key, workspace, raw)
            if (
                not result.job_started.status
                and result.job_started.reason != SucceededReason.PENDING
            ):
                span.set_status(
                    trace.StatusCode.ERROR,
                    redact_urls(f"{result.job_started.reason}: {result.job_started.message}"),
                )
            await self._write(raw, result, span)
            return again

    async def _run(
        self, key: str, workspace: Workspace, raw: dict[str, Any]
    ) -> tuple[TuningStatus, float | None]:
        spec = workspace.tuning
        assert spec is not None  # noqa: S101 - checked by the caller
        preset = self._catalog.preset(spec.preset.name)
        if preset is None:  # the planner refuses these first; a catalog change can still get here
            unknown = f"preset {spec.preset.name} is not in kairyu's catalog"
            return TuningStatus(
                TuningReport(False, "UnknownPreset", unknown),
                TuningReport(False, SucceededReason.PENDING, unknown),
            ), None
        try:
            output_dir = await self._output_dir(workspace, spec.config, spec.method)
        except TrainingConfigError as exc:
            bad = TuningReport(False, "InvalidTuningConfig", str(exc)[:1024])
            return TuningStatus(
                bad,
                TuningReport(False, SucceededReason.PENDING, "waiting for a usable tuning config"),
            ), None
        tuning = tuning_of(workspace, raw, preset, output_dir)
        if tuning is None:
            return tuning_status(None, []), None
        try:
            job, seen, again = await self._ensure(key, tuning)
        except (WorkloadError, errors.InvalidError) as exc:
            # A name another object holds, or a Job the apiserver refuses (422: a field of the
            # Workspace it cannot take): the same request would fail again, so it is not retried.
            message = f"the tuning job cannot be created: {exc}"[:1024]
            return TuningStatus(
                TuningReport(False, "WorkloadInvalid", message),
                TuningReport(False, SucceededReason.FAILED, message),
            ), None
        job_uid = job["metadata"].get("uid") if job is not None else None
        pods = [
            p
            for p in self._view.owned("Pod", key)
            if job_uid is not None
            and any(o.get("uid") == job_uid for o in p["metadata"].get("ownerReferences") or [])
        ]
        result = tuning_status(job, pods)
        if (
            job is not None
            and seen
            and not pods
            and result.job_started.reason == SucceededReason.PENDING
        ):
            # No pod at all: the Job's controller says why (admission refused it) only in an
            # event. Read only in this state, and only for a Job the view shows (the Job
            # controller has had a chance to act on it).
            refusal = await self._creation_refusal(tuning.owner.namespace, job["metadata"]["uid"])
            if refusal is not None:
                stuck = TuningReport(False, "FailedCreate", refusal[:1024])
                return TuningStatus(
                    stuck, TuningReport(False, SucceededReason.PENDING, refusal[:1024])
                ), again
        return result, again

    async def _output_dir(self, workspace: Workspace, config: str | None, method: str) -> str:
        """The config's output_dir, after checking the user's config; KAITO's default otherwise.

        The user's ConfigMap is not in the view: it is read once per Workspace generation and
        process while it is valid (a bad or missing one is read again at the Workspace's next
        change, so fixing it and touching the Workspace is enough).
        """
        if config is None:
            return tuning_manifests.RESULTS_DIR
        meta = workspace.metadata
        namespace = meta.namespace or ""
        cached = (meta.uid or "", meta.generation or 0, config, method)
        if (known := self._configs.get(cached)) is not None:
            return known
        try:
            found = await self._kube.get(resources.CONFIGMAPS, config, namespace=namespace)
        except errors.NotFoundError:
            raise TrainingConfigError(
                f"ConfigMap {namespace}/{config} (tuning.config) not found"
            ) from None
        text = (found.get("data") or {}).get(CONFIG_KEY)
        if text is None:
            raise TrainingConfigError(f"ConfigMap {namespace}/{config} has no {CONFIG_KEY} key")
        output_dir = check(text, method)
        self._configs[cached] = output_dir
        if len(self._configs) > _CACHE_LIMIT:
            del self._configs[next(iter(self._configs))]
        return output_dir

    async def _ensure(
        self, key: str, tuning: tuning_manifests.Tuning
    ) -> tuple[dict[str, Any] | None, bool, float | None]:
        """The Job (None while it is replaced), whether it is the view's, and when to look again.

        The Job is applied with its ConfigMap unless the view's Job carries their digest; one
        whose pod template differs is deleted first (the template is immutable), and made again
        when its deletion reaches the view.
        """
        owner = tuning.owner
        built = tuning_manifests.objects(tuning, self._settings.job)
        digest = self._stamp(built)
        wanted = built[-1]
        current = self._view.get(ObjectKey("Job", owner.namespace, tuning.name))
        if current is not None:
            check_owned(current, owner)  # never replace someone else's Job of that name
            self._children.remember(owner, "Job", tuning.name, current["metadata"]["uid"])
            if current["metadata"].get("deletionTimestamp"):
                return None, False, None  # being replaced: its removal wakes this key
            if digest_of(current) == digest:
                self._applied.pop(key, None)
                return current, True, None
            annotations = current["metadata"].get("annotations") or {}
            if (
                annotations.get(tuning_manifests.SPEC_ANNOTATION)
                != (wanted["metadata"]["annotations"][tuning_manifests.SPEC_ANNOTATION])
            ):
                log.info("replacing tuning job %s: the Workspace changed", key)
                self._applied.pop(key, None)
                await self._delete("Job", current, propagation="Foreground")
                return None, False, None
        settling = self._settling(key, owner)
        if settling is not None and (current is None or digest_of(current) != settling[0].digest):
            # The view does not show the last apply yet: wait for it rather than apply over a
            # Job it may not show (its template cannot change).
            pending, left = settling
            if pending.digest == digest:
                return pending.workload, False, left
            raise TemporaryError(f"waiting for the view to show the Job of {key}", delay=1.0)
        job = await self._apply(owner, built)
        self._remember(key, owner, digest, job)
        return job, False, None

    async def _remove(self, key: str, raw: dict[str, Any]) -> None:
        """Stop the tuning Job as soon as the Workspace is being deleted (its nodes drain).

        Only a Job the Workspace controls, as the view holds it; the generated ConfigMap too if
        this process applied it (its uid known). The rest goes with the Workspace.
        """
        owner = owner_of(raw)
        for job in self._view.owned("Job", key):
            if controller_uid(job) == owner.uid:
                await self._delete("Job", job, propagation="Background")
        name = owner.name + childnames.TUNING_CONFIG
        await self._delete_applied(owner, "ConfigMap", name, propagation="Background")

    async def _write(self, raw: dict[str, Any], result: TuningStatus, span: trace.Span) -> None:
        def condition(kind: ConditionType, report: TuningReport) -> Report:
            status = ConditionStatus.TRUE if report.status else ConditionStatus.FALSE
            # Signed URLs carry their token in the query string; conditions are widely readable.
            return Report(kind, status, report.reason, redact_urls(report.message))

        reports = [
            condition(ConditionType.JOB_STARTED, result.job_started),
            condition(ConditionType.WORKSPACE_SUCCEEDED, result.succeeded),
        ]
        await self._report(raw, reports, span)
