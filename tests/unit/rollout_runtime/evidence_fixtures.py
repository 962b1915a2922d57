"""Statistical checks with their evidence, for the runtime's records, status, page, CLI and
notifications: a small plan of one gate, one guardrail and one objective, and observations
judged from counts by the real `judge_counts` (so every number shown is one the core made).

The count queries are named so that `FakeMetricsSource` answers them: `NAME[...]` gives the
events (`values[NAME]`), the trials are its `sample` (1 000 by default).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rollout.core.evidence import judge_counts
from rollout.core.observations import Measurement, Observation
from rollout.core.plan import (
    CheckKind,
    CheckSpec,
    Counts,
    Plan,
    PlanSettings,
    Stage,
    StatSpec,
    StatTest,
    Threshold,
    Unit,
)
from rollout.entries import check_record
from rollout.records import CheckRecord
from tests.unit.rollout_runtime.fakes import BAKE, MID, OFF, TOP, check


def _counts(name: str) -> Counts:
    return Counts(f"{name}[{{window}}]", f"{name}_n[{{window}}]")


def stat_check(name: str, kind: CheckKind, stat: StatSpec, **extra: Any) -> CheckSpec:
    return CheckSpec(name=name, kind=kind, query=f"{name}_rate[{{window}}]",
                     window=timedelta(seconds=10), stat=stat, unit=Unit.RATIO, **extra)


STALE_GATE = stat_check("stale", CheckKind.GATE, StatSpec(
    StatTest.LIMIT, _counts("stale"), limit=Threshold(absolute=0.01)), label="L1 stale rate")
COHORT_GUARD = stat_check("cohort", CheckKind.GUARDRAIL, StatSpec(
    StatTest.NON_INFERIORITY, _counts("cohort"), control=_counts("control"), margin=0.01),
    label="L1 cohort error rate")
COST_OBJECTIVE = stat_check("cost", CheckKind.OBJECTIVE, StatSpec(
    StatTest.LIMIT, _counts("cost"), limit=Threshold(absolute=0.2)), label="cost share")


def evidence_plan(**settings: Any) -> Plan:
    values: dict[str, Any] = {
        "passes_to_advance": 1, "failures_to_rollback": 2, "cooldown": timedelta(minutes=5),
        "min_window": timedelta(seconds=1), "hold_too_long": timedelta(hours=1),
    }
    values.update(settings)
    return Plan(
        stages=(
            Stage("off", OFF, BAKE, (check("base", CheckKind.BASELINE),)),
            Stage("mid", MID, BAKE, (STALE_GATE, COST_OBJECTIVE)),
            Stage("top", TOP, BAKE, (STALE_GATE, COST_OBJECTIVE)),
        ),
        guardrails=(COHORT_GUARD,),
        settings=PlanSettings(**values),
    )


PLAN = evidence_plan()


def judged(spec: CheckSpec, events: float, trials: float,
           control: tuple[float, float] | None = None, *,
           elapsed_seconds: float = 3600.0) -> Observation:
    measurement = Measurement(
        value=events, sample=trials, elapsed_seconds=elapsed_seconds,
        control=None if control is None else Measurement(value=control[0], sample=control[1]),
    )
    return judge_counts(spec, measurement, PLAN, {})


def record(observation: Observation) -> CheckRecord:
    return check_record(PLAN, observation)


# One observation per situation the runtime must show (the verdicts are asserted where used).
GATE_PASSES = judged(STALE_GATE, 0, 5_000)  # 0 %, <= 0.108 % (95 %)
GATE_INCONCLUSIVE = judged(STALE_GATE, 1, 150, elapsed_seconds=600)  # ~8 771 more
GUARD_HEALTHY = judged(COHORT_GUARD, 3, 5_000, (15, 25_000))
GUARD_BREACH = judged(COHORT_GUARD, 300, 10_000, (500, 50_000))  # +2 pp, >= +1.2 pp
OBJECTIVE_MET = judged(COST_OBJECTIVE, 500, 5_000)  # 10 %, 8.5 % to 11.6 %
OBJECTIVE_MISSED = judged(COST_OBJECTIVE, 2_000, 5_000)
OBJECTIVE_OPEN = judged(COST_OBJECTIVE, 18, 100, elapsed_seconds=100)  # ~5 363 more
