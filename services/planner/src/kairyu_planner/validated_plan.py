"""Validate, then plan: the one path the planner service and `kairyu plan` share.

KAITO's semantic rules run first (without the GPU memory checks, which planning reports with a
more precise reason); a refusal by either becomes a `PlanError`.
"""

from __future__ import annotations

from kairyu_contracts.api import Workspace
from kairyu_contracts.catalog import Catalog, GpuSku
from kairyu_planner.planning import PlanError, PlanReason, PlanResult, plan_workspace
from kairyu_planner.settings import PlanningSettings
from kairyu_planner.validation import validate


def plan_checked(
    ws: Workspace,
    catalog: Catalog,
    settings: PlanningSettings,
    exclude: frozenset[str] = frozenset(),
    byo: GpuSku | None = None,
) -> PlanResult:
    """The plan for `ws` with every warning, or PlanError (InvalidSpec or a planning reason).

    `byo`: what the user's own nodes offer, when the planner plans for them.
    """
    verdict = validate(
        ws, catalog=catalog, planning=settings, resource_checks=False, admission=False
    )
    if not verdict.allowed:
        raise PlanError(PlanReason.INVALID_SPEC, "; ".join(verdict.errors))
    result = plan_workspace(ws, catalog, settings, exclude, byo)
    return PlanResult(plan=result.plan, warnings=verdict.warnings + result.warnings)
