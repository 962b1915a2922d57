"""The frozen `Plan` from a plan file that passed the schema and the cross-checks
(`plan_loader`): references resolved, defaults applied, thresholds and tests typed."""

from __future__ import annotations

from datetime import timedelta

from rollout.core.boundaries import boundary_label, nearest_boundary
from rollout.core.flags import FlagSettings
from rollout.core.plan import (
    BOUNDARY_PLACEHOLDER,
    CheckKind,
    CheckSpec,
    Counts,
    Plan,
    PlanSettings,
    Stage,
    StatSpec,
    Threshold,
)
from rollout.core.plan_schema import CheckModel, InlineCheck, PlanDocument, RelativeThreshold


def build_plan(document: PlanDocument) -> Plan:
    settings = document.settings
    library = {name: _spec(name, check, settings.min_window)
               for name, check in document.checks.items()}

    def resolve(item: str | InlineCheck) -> CheckSpec:
        if isinstance(item, str):
            return library[item]
        return _spec(item.name, item, settings.min_window)

    return Plan(
        stages=tuple(
            Stage(
                name=stage.name,
                flags=FlagSettings(shadow=stage.flags.shadow, l2=stage.flags.l2,
                                   l1_percent=stage.flags.l1_percent),
                bake=stage.bake,
                checks=tuple(resolve(item) for item in stage.checks),
            )
            for stage in document.stages
        ),
        guardrails=tuple(resolve(item) for item in document.guardrails),
        settings=PlanSettings(
            passes_to_advance=settings.passes_to_advance,
            failures_to_rollback=settings.failures_to_rollback,
            cooldown=settings.cooldown,
            auto_resume_after_rollback=settings.auto_resume_after_rollback,
            time_scale=settings.time_scale,
            min_window=settings.min_window,
            evaluation_interval=settings.evaluation_interval,
            hold_too_long=settings.hold_too_long,
            gate_alpha=settings.gate_alpha,
            guardrail_alpha_fail=settings.guardrail_alpha_fail,
            objective_alpha=settings.objective_alpha,
        ),
    )


def _threshold(value: float | RelativeThreshold | None) -> Threshold | None:
    if isinstance(value, RelativeThreshold):
        return Threshold(baseline=value.baseline, factor=value.factor, margin=value.margin)
    return None if value is None else Threshold(absolute=value)


def _spec(name: str, check: CheckModel, min_window: timedelta) -> CheckSpec:
    # An absolute slower_than places `{le}` in the value queries now. A statistical check's
    # counts keep it: they are rendered each cycle (rollout.core.boundaries), where a
    # relative slower_than is placed once its baseline is recorded.
    label = (boundary_label(nearest_boundary(check.slower_than))
             if isinstance(check.slower_than, float) else None)

    def placed(template: str) -> str:
        return template if label is None else template.replace(BOUNDARY_PLACEHOLDER, label)

    counts = None
    if check.kind is CheckKind.BASELINE and check.events is not None \
            and check.trials is not None:
        counts = Counts(placed(check.events), placed(check.trials))
    return CheckSpec(
        name=name,
        kind=check.kind,
        query=placed(check.query or ""),  # a statistical check's point estimate is optional
        window=check.window or min_window,
        stat=_stat(check),
        counts=counts,
        comparator=check.op,
        threshold=_threshold(check.threshold),
        sample_query=None if check.sample_query is None else placed(check.sample_query),
        min_sample=check.min_sample,
        critical=check.critical,
        dry_run=check.dry_run,
        unit=check.unit,
        label=check.label,
        description=check.description,
        rollback_to=check.rollback_to,
    )


def _stat(check: CheckModel) -> StatSpec | None:
    if check.test is None or check.kind is CheckKind.BASELINE:
        return None
    assert check.events is not None and check.trials is not None  # the cross-checks hold
    control = check.control
    return StatSpec(
        test=check.test,
        counts=Counts(check.events, check.trials),
        control=None if control is None else Counts(control.events, control.trials),
        baseline=check.baseline,
        margin=check.margin or 0.0,
        limit=_threshold(check.limit),
        higher_is_worse=check.higher_is_worse,
        alpha=check.alpha,
        alpha_fail=check.alpha_fail,
        since=check.since,
        slower_than=_threshold(check.slower_than),
    )
