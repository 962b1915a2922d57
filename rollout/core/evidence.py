"""The verdict of a statistical check: counts since the evidence began, one anytime-valid
test (rollout.core.stats), and how far the check is from a verdict (DESIGN.md §7).

Pure, like `checks.judge` for threshold checks: the runner measures the counts, `judge_counts`
turns them into an Observation whose `evidence` carries the estimate, both bounds, the
margin or limit, n, the error levels and the samples still needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from rollout.core.checks import format_count, format_value
from rollout.core.observations import Evidence, Measurement, Observation, Verdict
from rollout.core.plan import CheckKind, CheckSpec, Plan, StatSpec, StatTest, Unit
from rollout.core.stats import (
    Judgement,
    StatVerdict,
    limit_test,
    non_inferiority,
    remaining,
    samples_for_limit,
)
from rollout.core.stats_design import first_n

_VERDICTS = {
    StatVerdict.PASS: Verdict.PASS,
    StatVerdict.FAIL: Verdict.FAIL,
    StatVerdict.INCONCLUSIVE: Verdict.INCONCLUSIVE,
}
MINUS = "\u2212"  # a real minus sign in reason lines, escaped because it looks like a hyphen
# Objectives read as met / missed rather than pass / fail.
_OBJECTIVE_WORDS = {Verdict.PASS: "met", Verdict.FAIL: "missed"}


@dataclass(frozen=True, slots=True)
class _Comparison:
    events: float | None
    trials: float | None
    growing: bool  # a concurrent cohort grows with the stage; a baseline is fixed


def judge_counts(
    spec: CheckSpec,
    measurement: Measurement,
    plan: Plan,
    baseline_counts: Mapping[str, tuple[float, float]],
) -> Observation:
    """Turn counts into a verdict with its evidence. Error beats everything, then missing
    counts, then a missing baseline; zero trials is no data (nothing to judge yet)."""
    stat = spec.stat
    assert stat is not None
    label = spec.display_name
    events, trials = measurement.value, measurement.sample

    def without_evidence(verdict: Verdict, message: str) -> Observation:
        return Observation(
            check=spec.name, verdict=verdict, value=None, sample=trials, limit=None,
            message=message, error=_first_error(measurement),
        )  # fmt: skip

    error = _first_error(measurement)
    if error is not None:
        return without_evidence(Verdict.ERROR, f"{label}: query failed: {error}")
    if not _usable(events) or not _usable(trials) or trials == 0:
        return without_evidence(Verdict.NO_DATA, f"{label}: no data yet")
    assert events is not None and trials is not None
    events = min(events, trials)  # increase() extrapolates; a rate cannot exceed 1

    comparison = _comparison_counts(stat, measurement, baseline_counts)
    if stat.test is StatTest.NON_INFERIORITY and not (
        _usable(comparison.events) and _usable(comparison.trials) and comparison.trials
    ):
        missing = (
            f"no baseline counts {stat.baseline!r} recorded" if stat.baseline is not None
            else "no traffic in the control cohort yet"
        )
        return without_evidence(Verdict.NO_DATA, f"{label}: {missing}")

    limit = _limit(stat, baseline_counts)
    if limit is None:
        return without_evidence(
            Verdict.NO_DATA, f"{label}: no baseline {_limit_baseline(stat)!r} recorded yet"
        )
    alpha, alpha_fail = plan.alphas(spec)
    judgement = _test(stat, events, trials, comparison, limit, alpha, alpha_fail)
    verdict = _VERDICTS[judgement.verdict]
    more = _more_needed(stat, judgement, events, trials, comparison, limit, alpha, alpha_fail,
                        measurement.elapsed_seconds) if verdict is Verdict.INCONCLUSIVE else None
    evidence = Evidence(
        test=stat.test.value, comparison=stat.comparison,
        estimate=judgement.estimate, lower=judgement.lower, upper=judgement.upper,
        limit=limit, higher_is_worse=stat.higher_is_worse, alpha=alpha, alpha_fail=alpha_fail,
        events=events, trials=trials,
        control_events=comparison.events, control_trials=comparison.trials,
        needed_more=None if more is None else more[0],
        seconds_more=None if more is None else more[1],
    )  # fmt: skip
    return Observation(
        check=spec.name, verdict=verdict, value=judgement.estimate, sample=trials,
        limit=limit, message=describe(spec, verdict, evidence), evidence=evidence,
    )  # fmt: skip


def describe(spec: CheckSpec, verdict: Verdict, evidence: Evidence) -> str:
    """One reason line: `L1 cohort error rate +0.02 pp, <= +0.31 pp (95 %); margin 0.5 pp
    vs control cohort (n=4 120 vs 20 310): pass`."""
    unit = spec.unit if spec.unit is not Unit.NUMBER else Unit.RATIO
    difference = evidence.test == StatTest.NON_INFERIORITY.value
    shown = _signed if difference else format_value
    # A failure is shown by the bound that proves the harm, anything else by the bound
    # that would show safety.
    proving_harm = verdict is Verdict.FAIL
    if evidence.higher_is_worse != proving_harm:
        relation, bound = "≤", evidence.upper
    else:
        relation, bound = "≥", evidence.lower
    level = evidence.alpha_fail if proving_harm else evidence.alpha
    confidence = f"{_percent(1 - level)} %"
    if difference:
        target = f"margin {_signed(evidence.limit, unit)} vs {evidence.comparison}"
    else:
        target = f"limit {format_value(evidence.limit, unit)}"
    n = f"n={format_count(evidence.trials)}"
    if evidence.control_trials is not None:
        n += f" vs {format_count(evidence.control_trials)}"
    word = _OBJECTIVE_WORDS.get(verdict, verdict.value) if spec.kind is CheckKind.OBJECTIVE \
        else verdict.value
    line = (
        f"{spec.display_name} {shown(evidence.estimate, unit)}, {relation} "
        f"{shown(bound, unit)} ({confidence}); {target} ({n}): {word}"
    )
    if evidence.needed_more is not None:
        line += f", ~{format_count(evidence.needed_more)} more"
        if evidence.seconds_more is not None:
            line += f" (≈{_human_seconds(evidence.seconds_more)} at the current rate)"
    return line


def _test(
    stat: StatSpec, events: float, trials: float, comparison: _Comparison, limit: float,
    alpha: float, alpha_fail: float,
) -> Judgement:
    if stat.test is StatTest.LIMIT:
        return limit_test(events, trials, limit, alpha, alpha_fail,
                          higher_is_worse=stat.higher_is_worse)
    assert comparison.events is not None and comparison.trials is not None
    return non_inferiority(
        events, trials, min(comparison.events, comparison.trials), comparison.trials,
        limit, alpha, alpha_fail, higher_is_worse=stat.higher_is_worse,
    )  # fmt: skip


def _more_needed(
    stat: StatSpec, judgement: Judgement, events: float, trials: float,
    comparison: _Comparison, limit: float, alpha: float, alpha_fail: float,
    elapsed_seconds: float | None,
) -> tuple[float | None, float | None]:
    """More trials (of this cohort) until a verdict if the current rates held, and about how
    long at the current traffic."""
    rate = events / trials
    needed: int | None
    if stat.test is StatTest.LIMIT:
        needed = samples_for_limit(rate, limit, alpha, alpha_fail,
                                   higher_is_worse=stat.higher_is_worse)
    else:
        assert comparison.events is not None and comparison.trials is not None
        control_rate = comparison.events / comparison.trials
        # A concurrent control grows in proportion; a recorded baseline stays as it is.
        ratio = comparison.trials / trials if comparison.growing else 0.0

        def reached(n: float) -> bool:
            n_c = n * ratio if comparison.growing else comparison.trials or 0.0
            result = non_inferiority(
                rate * n, n, control_rate * n_c, n_c, limit, alpha, alpha_fail,
                higher_is_worse=stat.higher_is_worse,
            )
            return result.verdict is not StatVerdict.INCONCLUSIVE

        needed = first_n(reached, 1e9)
    per_second = (
        trials / elapsed_seconds if elapsed_seconds is not None and elapsed_seconds > 0 else 0.0
    )
    estimate = remaining(needed, trials, per_second)
    if estimate.more is None or estimate.more <= 0:
        # The rates alone would already decide: the bound is still paying for the early,
        # noisier looks. Say nothing rather than "0 more".
        return None, None
    del judgement
    return estimate.more, estimate.seconds


def _comparison_counts(
    stat: StatSpec, measurement: Measurement, baseline_counts: Mapping[str, tuple[float, float]]
) -> _Comparison:
    if stat.control is not None:
        control = measurement.control
        if control is None:
            return _Comparison(None, None, growing=True)
        return _Comparison(control.value, control.sample, growing=True)
    if stat.baseline is not None:
        recorded = baseline_counts.get(stat.baseline)
        if recorded is None:
            return _Comparison(None, None, growing=False)
        return _Comparison(recorded[0], recorded[1], growing=False)
    return _Comparison(None, None, growing=False)


def _limit(stat: StatSpec, baseline_counts: Mapping[str, tuple[float, float]]) -> float | None:
    """The margin (non-inferiority), or the limit with a relative one resolved against the
    baseline check's recorded rate, clipped to a probability."""
    if stat.test is StatTest.NON_INFERIORITY:
        return stat.margin
    assert stat.limit is not None
    rates = {
        name: events / trials for name, (events, trials) in baseline_counts.items() if trials > 0
    }
    resolved = stat.limit.limit(rates)
    return None if resolved is None else min(max(resolved, 0.0), 1.0)


def _limit_baseline(stat: StatSpec) -> str | None:
    return None if stat.limit is None else stat.limit.baseline


def _first_error(measurement: Measurement) -> str | None:
    if measurement.error is not None:
        return measurement.error
    if measurement.control is not None:
        return measurement.control.error
    return None


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value >= 0


def _signed(value: float, unit: Unit) -> str:
    text = format_value(abs(value), unit)
    if unit is Unit.RATIO:
        text = text.replace(" %", " pp")
    return f"{'+' if value >= 0 else MINUS}{text}"


def _percent(level: float) -> str:
    return f"{level * 100:.4g}"


def _human_seconds(seconds: float) -> str:
    for suffix, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.2g} {suffix}"
    return f"{max(seconds, 1.0):.0f} s"


def with_recorded_counts(observation: Observation, counts: Measurement) -> Observation:
    """A baseline check's observation with the (events, trials) it records for the
    comparisons that follow; without usable counts it cannot serve as a baseline, so it is
    no data (an error in the counts is an error)."""
    if observation.verdict is not Verdict.PASS:
        return observation
    if counts.error is not None:
        return replace(observation, verdict=Verdict.ERROR, error=counts.error,
                       message=f"{observation.message}; counts query failed: {counts.error}")
    events, trials = counts.value, counts.sample
    if not (_usable(events) and _usable(trials)) or not trials:
        return replace(observation, verdict=Verdict.NO_DATA,
                       message=f"{observation.message}; no counts to record yet")
    assert events is not None and trials is not None
    return replace(
        observation, counts=(min(events, trials), trials),
        message=f"{observation.message} ({format_count(events)} of {format_count(trials)})",
    )
