"""Decisions from the anytime-valid bounds of `stats_bounds`, the cohort-split check, and
how many samples a decision needs.

* `non_inferiority` -- treatment minus control of a harm rate against a margin: `pass`
  when the upper bound (at `alpha`) is <= margin, `fail` when the lower bound (at
  `alpha_fail`) is > margin -- harm beyond the margin is proven -- else `inconclusive`.
  Uses `difference_bound` (AsympCS of Waudby-Smith et al. 2024 intersected with the exact
  beta-binomial mixture, see `stats_bounds`). With `higher_is_worse=False` (a rate that
  should not drop, e.g. a hit rate) the roles of the bounds swap and the limit is -margin.
* `limit_test` -- one rate against an absolute limit (rare harm: stale answers among audits,
  or a rate that must be reached), with the exact beta-binomial mixture sequence, whose
  prior is by default `BetaMixture.for_limit(limit)`. Same verdict rule.
  Because each side's bound is anytime-valid, the probability of ever passing wrongly is
  <= alpha and of ever failing wrongly is <= alpha_fail, however often the test is run.
* `srm_test` -- sample-ratio mismatch: the sequential multinomial test of Lindon & Malek,
  "Anytime-valid inference for multinomial count data", NeurIPS 2022 (the test behind
  Optimizely's and GrowthBook-style sequential SRM checks). The e-value is the
  Dirichlet-multinomial marginal likelihood over the multinomial likelihood under the
  expected shares theta, with the prior Dirichlet(k theta), k = 100 as in their reference
  implementation:

      e = Gamma(k) / Gamma(k + N) * prod_i Gamma(k theta_i + x_i) / Gamma(k theta_i)
          / prod_i theta_i^x_i

  a nonnegative martingale with mean 1 under the null, so `mismatch` (e >= 1/alpha) is
  wrong with probability <= alpha however often it is checked. `p_value` is min(1, 1/e) at
  this look (the running minimum over looks is also valid).
* `samples_for_difference`, `samples_for_limit` -- the trials needed before the bound,
  evaluated at the expected counts for given true rates, reaches the verdict those rates
  imply: exponential search, then bisection on n. `remaining` turns that into "~N more
  (~T seconds at the current rate)".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from rollout.core.stats_bounds import (
    DEFAULT_MIN_EVENTS,
    DEFAULT_TARGET_N,
    JEFFREYS,
    BetaMixture,
    Bound,
    Prior,
    difference_bound,
    mixture_proportion_bound,
)

DEFAULT_SRM_CONCENTRATION: Final = 100.0  # Lindon & Malek's k: the prior is Dirichlet(k theta)
_MAX_N: Final = 10**10


class StatVerdict(StrEnum):
    """What a bound shows. Values match `observations.Verdict` where they overlap."""

    PASS = "pass"  # noqa: S105  (a verdict, not a password)
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class Judgement:
    """A verdict with its evidence.

    `lower` and `upper` bound the rate (or the difference). The bound on the harmful side
    (`upper` when higher is worse) is at `alpha`, the one that can prove harm at
    `alpha_fail`. `limit` is the absolute limit, or the margin for a difference (in the
    unit of the rate: margin 0.002 is 0.2 percentage points).
    """

    verdict: StatVerdict
    estimate: float
    lower: float
    upper: float
    limit: float
    n: float
    alpha: float
    alpha_fail: float
    higher_is_worse: bool
    method: str


def _judge(
    bounds: Callable[[float], Bound],
    threshold: float,
    limit: float,
    alpha: float,
    alpha_fail: float | None,
    higher_is_worse: bool,
) -> Judgement:
    fail_alpha = alpha if alpha_fail is None else alpha_fail
    pass_side = bounds(alpha)
    fail_side = pass_side if fail_alpha == alpha else bounds(fail_alpha)
    if higher_is_worse:
        lower, upper = fail_side.lower, pass_side.upper
        passed, failed = upper <= threshold, lower > threshold
    else:
        lower, upper = pass_side.lower, fail_side.upper
        passed, failed = lower >= threshold, upper < threshold
    verdict = (
        StatVerdict.PASS if passed else StatVerdict.FAIL if failed else StatVerdict.INCONCLUSIVE
    )
    return Judgement(
        verdict, pass_side.estimate, lower, upper, limit, pass_side.n,
        alpha, fail_alpha, higher_is_worse, pass_side.method,
    )  # fmt: skip


def non_inferiority(
    treatment_events: float,
    treatment_trials: float,
    control_events: float,
    control_trials: float,
    margin: float,
    alpha: float,
    alpha_fail: float | None = None,
    *,
    higher_is_worse: bool = True,
    target_n: float = DEFAULT_TARGET_N,
    prior: Prior = JEFFREYS,
    min_events: float = DEFAULT_MIN_EVENTS,
) -> Judgement:
    """Is rate(treatment) - rate(control) within `margin` (>= 0) of no harm?"""
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be finite and >= 0, got {margin}")
    counts = (treatment_events, treatment_trials, control_events, control_trials)

    def bounds(level: float) -> Bound:
        return difference_bound(*counts, level, target_n, prior, min_events)

    threshold = margin if higher_is_worse else -margin
    return _judge(bounds, threshold, margin, alpha, alpha_fail, higher_is_worse)


def limit_test(
    events: float,
    trials: float,
    limit: float,
    alpha: float,
    alpha_fail: float | None = None,
    *,
    higher_is_worse: bool = True,
    prior: Prior | None = None,
) -> Judgement:
    """Is the rate events/trials below `limit` (or above it, if higher is better)?"""
    if not 0 <= limit <= 1:
        raise ValueError(f"limit must be in [0, 1], got {limit}")
    chosen = prior
    if chosen is None:
        chosen = BetaMixture.for_limit(limit) if 0 < limit < 1 else JEFFREYS

    def bounds(level: float) -> Bound:
        return mixture_proportion_bound(events, trials, level, chosen)

    return _judge(bounds, limit, limit, alpha, alpha_fail, higher_is_worse)


# --- Sample-ratio mismatch (Lindon & Malek 2022) -----------------------------------------


@dataclass(frozen=True, slots=True)
class SrmResult:
    mismatch: bool
    e_value: float
    p_value: float
    observed_shares: tuple[float, ...]
    expected_shares: tuple[float, ...]
    n: float
    alpha: float


def srm_test(
    counts: Sequence[float],
    expected_shares: Sequence[float],
    alpha: float,
    concentration: float = DEFAULT_SRM_CONCENTRATION,
) -> SrmResult:
    """Anytime-valid test that `counts` were split with `expected_shares`."""
    if len(counts) != len(expected_shares) or len(counts) < 2:
        raise ValueError("need at least two cohorts, with one expected share each")
    if any(c < 0 or not math.isfinite(c) for c in counts):
        raise ValueError(f"counts must be finite and >= 0, got {list(counts)}")
    if any(s < 0 for s in expected_shares) or not math.isclose(sum(expected_shares), 1.0):
        raise ValueError(f"expected shares must be >= 0 and sum to 1, got {expected_shares}")
    if not (0 < alpha < 1 and concentration > 0):
        raise ValueError("need 0 < alpha < 1 and concentration > 0")
    total = float(sum(counts))
    log_e = 0.0
    if any(share == 0 and count > 0 for share, count in zip(expected_shares, counts, strict=True)):
        log_e = math.inf
    elif total > 0:
        log_e = math.lgamma(concentration) - math.lgamma(concentration + total)
        for share, count in zip(expected_shares, counts, strict=True):
            if share > 0:
                prior = concentration * share
                log_e += math.lgamma(prior + count) - math.lgamma(prior) - count * math.log(share)
    e_value = math.exp(min(log_e, 700.0))
    observed = tuple(c / total if total else math.nan for c in counts)
    return SrmResult(
        mismatch=log_e >= math.log(1 / alpha),
        e_value=e_value,
        p_value=min(1.0, math.exp(-log_e)),
        observed_shares=observed,
        expected_shares=tuple(float(s) for s in expected_shares),
        n=total,
        alpha=alpha,
    )


def cohort_split_test(
    treatment_trials: float,
    control_trials: float,
    treatment_share: float,
    alpha: float,
    concentration: float = DEFAULT_SRM_CONCENTRATION,
) -> SrmResult:
    """`srm_test` for two cohorts: treatment expected to get `treatment_share` of trials."""
    return srm_test(
        (treatment_trials, control_trials), (treatment_share, 1 - treatment_share),
        alpha, concentration,
    )  # fmt: skip


# --- Samples to a verdict ----------------------------------------------------------------


def first_n(reached: Callable[[float], bool], max_n: float) -> int | None:
    """The smallest integer n >= 1 with reached(n), assuming it stays reached after."""
    high = 1
    while not reached(high):
        if high >= max_n:
            return None
        high = min(2 * high, int(max_n))
    low = high // 2  # not reached (or 0)
    while high - low > 1:
        middle = (low + high) // 2
        if reached(middle):
            high = middle
        else:
            low = middle
    return high


def samples_for_difference(
    treatment_rate: float,
    control_rate: float,
    margin: float,
    alpha: float,
    alpha_fail: float | None = None,
    *,
    treatment_share: float = 0.5,
    higher_is_worse: bool = True,
    target_n: float = DEFAULT_TARGET_N,
    prior: Prior = JEFFREYS,
    min_events: float = DEFAULT_MIN_EVENTS,
    max_n: float = _MAX_N,
) -> int | None:
    """Total trials (both cohorts) until `non_inferiority` at the expected counts reaches
    the verdict the true rates imply; None if they sit on the margin or need > max_n."""
    difference = treatment_rate - control_rate
    harm = difference - margin if higher_is_worse else -margin - difference
    if harm == 0:
        return None
    wanted = StatVerdict.FAIL if harm > 0 else StatVerdict.PASS

    def reached(n: float) -> bool:
        n_t, n_c = n * treatment_share, n * (1 - treatment_share)
        judgement = non_inferiority(
            treatment_rate * n_t, n_t, control_rate * n_c, n_c, margin, alpha, alpha_fail,
            higher_is_worse=higher_is_worse, target_n=target_n, prior=prior,
            min_events=min_events,
        )  # fmt: skip
        return judgement.verdict is wanted

    return first_n(reached, max_n)


def samples_for_limit(
    rate: float,
    limit: float,
    alpha: float,
    alpha_fail: float | None = None,
    *,
    higher_is_worse: bool = True,
    prior: Prior | None = None,
    max_n: float = _MAX_N,
) -> int | None:
    """Trials until `limit_test` at the expected count reaches the verdict the true rate
    implies; None if the rate sits on the limit or needs > max_n."""
    if rate == limit:
        return None
    wanted = StatVerdict.FAIL if (rate > limit) == higher_is_worse else StatVerdict.PASS

    def reached(n: float) -> bool:
        judgement = limit_test(
            rate * n, n, limit, alpha, alpha_fail, higher_is_worse=higher_is_worse, prior=prior
        )
        return judgement.verdict is wanted

    return first_n(reached, max_n)


@dataclass(frozen=True, slots=True)
class SampleEstimate:
    """How far a check is from a verdict: `more` trials, ~`seconds` at the current rate."""

    needed: int | None
    more: float | None
    seconds: float | None


def remaining(needed: int | None, have: float, per_second: float) -> SampleEstimate:
    if needed is None:
        return SampleEstimate(None, None, None)
    more = max(0.0, needed - have)
    seconds = more / per_second if per_second > 0 else (0.0 if more == 0 else None)
    return SampleEstimate(needed, more, seconds)
