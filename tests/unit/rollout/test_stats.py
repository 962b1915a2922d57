"""The statistics of rollout.core.stats against known values, oracles and simulation.

Oracles: scipy (a dev dependency only) for the exact Clopper-Pearson bounds, the log-beta
function and the Dirichlet-multinomial likelihood; GrowthBook's gbstats for the asymptotic
confidence sequence (values below computed with `sequential_rho` and
`sequential_interval_halfwidth_one_sided` of packages/stats/gbstats/frequentist/tests.py at
growthbook/growthbook@8f1db4456915a8e7b7faf23d5632ca7219d2f469).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import special
from scipy import stats as scipy_stats

from rollout.core.observations import Verdict
from rollout.core.stats import (
    BetaMixture,
    BetaPrior,
    Bound,
    Prior,
    StatVerdict,
    asymptotic_difference_bound,
    asymptotic_proportion_bound,
    cohort_split_test,
    difference_bound,
    limit_test,
    log_mixture_martingale,
    mixture_difference_bound,
    mixture_proportion_bound,
    non_inferiority,
    remaining,
    samples_for_difference,
    samples_for_limit,
    sequential_rho,
    srm_test,
    unit_margin,
)

PASS, FAIL, INCONCLUSIVE = StatVerdict.PASS, StatVerdict.FAIL, StatVerdict.INCONCLUSIVE


def clopper_pearson(events: int, trials: int, alpha: float) -> tuple[float, float]:
    """One-sided exact (fixed-n) bounds, each at level 1 - alpha."""
    lower = 0.0 if events == 0 else scipy_stats.beta.ppf(alpha, events, trials - events + 1)
    upper = (
        1.0 if events == trials else scipy_stats.beta.ppf(1 - alpha, events + 1, trials - events)
    )
    return float(lower), float(upper)


# --- The asymptotic confidence sequence against gbstats --------------------------------


@pytest.mark.parametrize(
    ("alpha", "target_n", "n", "variance", "rho", "half_width"),
    [
        (0.05, 5000, 100, 0.25, 0.03557768852889753, 0.3303444024573947),
        (0.05, 5000, 5000, 0.21, 0.03557768852889753, 0.01801058911550701),
        (0.01, 5000, 20000, 0.0099, 0.044724772793340195, 0.0024201481558370546),
        (0.05, 1000, 1e6, 0.09, 0.07955413003292938, 0.0010966560149192899),
        (0.1, 5000, 50, 0.5, 0.030523579492635157, 0.9020133151818966),
    ],
)
def test_asymptotic_cs_matches_gbstats(
    alpha: float, target_n: float, n: float, variance: float, rho: float, half_width: float
) -> None:
    assert sequential_rho(alpha, target_n) == pytest.approx(rho, rel=1e-12)
    assert math.sqrt(variance) * unit_margin(n, alpha, target_n) == pytest.approx(
        half_width, rel=1e-12
    )


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
@pytest.mark.parametrize("n", [10, 100, 1000, 5000, 10**5, 10**7])
def test_asymptotic_margin_is_wider_than_the_fixed_n_normal_bound(alpha: float, n: int) -> None:
    z = float(scipy_stats.norm.ppf(1 - alpha))
    assert unit_margin(n, alpha) > z / math.sqrt(n)


@pytest.mark.parametrize(
    ("events", "trials"), [(30, 100), (100, 1000), (500, 1000), (900, 1000), (2000, 20000)]
)
def test_asymptotic_proportion_bound_is_wider_than_clopper_pearson(
    events: int, trials: int
) -> None:
    bound = asymptotic_proportion_bound(events, trials, 0.05)
    lower, upper = clopper_pearson(events, trials, 0.05)
    assert bound.estimate == events / trials
    assert bound.lower < lower
    assert bound.upper > upper


def test_asymptotic_difference_bound_is_symmetric_around_the_difference() -> None:
    bound = asymptotic_difference_bound(120, 1000, 100, 1000, 0.05)
    variance = 0.12 * 0.88 / 1000 + 0.1 * 0.9 / 1000
    half = math.sqrt(variance * 2000) * unit_margin(2000, 0.05)
    assert bound.estimate == pytest.approx(0.02)
    assert (bound.lower, bound.upper) == pytest.approx((0.02 - half, 0.02 + half))


# --- The exact beta-binomial mixture bound -----------------------------------------------


@pytest.mark.parametrize(
    ("events", "trials", "prior"),
    [(0, 10, BetaPrior()), (3, 50, BetaPrior()), (7, 1000, BetaPrior(1, 1)),
     (40.5, 400.25, BetaPrior.for_rate(0.01)), (1000, 1000, BetaPrior(2, 3)),
    (2, 50, BetaMixture.for_limit(0.001)), (0, 5000, BetaMixture.for_limit(0.001))],
)  # fmt: skip
def test_log_mixture_martingale_matches_scipy(events: float, trials: float, prior: Prior) -> None:
    rate = 0.037
    components = prior.components if isinstance(prior, BetaMixture) else ((1.0, prior),)
    marginal = special.logsumexp(
        [special.betaln(beta.a + events, beta.b + trials - events) - special.betaln(beta.a, beta.b)
         for _, beta in components],
        b=[weight for weight, _ in components],
    )  # fmt: skip
    expected = marginal - special.xlogy(events, rate) - special.xlogy(trials - events, 1 - rate)
    assert log_mixture_martingale(rate, events, trials, prior) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("trials", [1, 10, 82, 1000, 10**6])
@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_mixture_bound_with_no_events_has_its_closed_form(trials: int, alpha: float) -> None:
    # Uniform prior, S = 0: M_n(p) = 1 / ((n + 1) (1 - p)^n), so U = 1 - (alpha / (n + 1))^(1/n).
    uniform = BetaPrior(1, 1)
    expected = -math.expm1(math.log(alpha / (trials + 1)) / trials)
    bound = mixture_proportion_bound(0, trials, alpha, uniform)
    assert bound.upper == pytest.approx(expected, rel=1e-9)
    assert bound.lower == 0.0
    mirrored = mixture_proportion_bound(trials, trials, alpha, uniform)
    assert (mirrored.lower, mirrored.upper) == pytest.approx((1 - expected, 1.0), rel=1e-9)


@pytest.mark.parametrize(
    ("events", "trials", "alpha"),
    [(0, 50, 0.05), (0, 3000, 0.05), (1, 20, 0.05), (2, 500, 0.01), (5, 100, 0.05),
     (37, 1000, 0.05), (500, 1000, 0.01), (999, 1000, 0.05)],
)  # fmt: skip
def test_mixture_bound_is_wider_than_clopper_pearson_and_on_its_boundary(
    events: int, trials: int, alpha: float
) -> None:
    bound = mixture_proportion_bound(events, trials, alpha)
    lower, upper = clopper_pearson(events, trials, alpha)
    assert bound.lower <= lower
    assert bound.upper >= upper
    threshold = math.log(1 / alpha)
    for end in (bound.lower, bound.upper):
        if 0 < end < 1:
            assert log_mixture_martingale(end, events, trials) == pytest.approx(threshold, abs=1e-6)


def test_the_issues_examples_prove_nothing() -> None:
    # "0 stale of 50 audits, whose 95 % upper bound is ~6 %" (Clopper-Pearson: 5.8 %).
    stale = limit_test(0, 50, limit=0.001, alpha=0.05)
    assert stale.verdict is INCONCLUSIVE
    assert stale.upper >= 1 - 0.05 ** (1 / 50)
    # "L1 cohort error rate minus control 0 % <= 0.2 % (n=82)" used to pass.
    errors = non_inferiority(0, 41, 0, 41, margin=0.002, alpha=0.05)
    assert errors.verdict is INCONCLUSIVE
    assert errors.upper > 0.05


@pytest.mark.parametrize(
    "bound",
    [
        lambda n: mixture_proportion_bound(0.1 * n, n, 0.05),
        lambda n: mixture_proportion_bound(0, n, 0.05, BetaMixture.for_limit(0.001)),
        lambda n: asymptotic_proportion_bound(0.1 * n, n, 0.05),
        lambda n: difference_bound(0.02 * n, n, 0.01 * n, n, 0.05),
        lambda n: mixture_difference_bound(0.02 * n, n, 0.01 * n, n, 0.05),
    ],
)
def test_bounds_tighten_with_n(bound: Callable[[int], Bound]) -> None:
    bounds = [bound(n) for n in (100, 300, 1000, 3000, 10**4, 10**5, 10**6)]
    for looser, tighter in itertools.pairwise(bounds):
        assert tighter.lower >= looser.lower
        assert tighter.upper <= looser.upper
        assert tighter.upper - tighter.lower < looser.upper - looser.lower


def test_difference_bound_uses_the_asymptotic_side_only_with_enough_events() -> None:
    few = difference_bound(9, 1000, 5, 1000, 0.05)
    exact = mixture_difference_bound(9, 1000, 5, 1000, 0.025)
    assert (few.lower, few.upper, few.method) == (exact.lower, exact.upper, exact.method)
    many = difference_bound(300, 10000, 200, 10000, 0.05)
    asymptotic = asymptotic_difference_bound(300, 10000, 200, 10000, 0.025)
    exact = mixture_difference_bound(300, 10000, 200, 10000, 0.025)
    assert many.upper == min(asymptotic.upper, exact.upper) == asymptotic.upper
    assert many.lower == max(asymptotic.lower, exact.lower) == asymptotic.lower


@pytest.mark.parametrize(
    "bound",
    [
        mixture_proportion_bound(0, 0, 0.05),
        asymptotic_proportion_bound(0, 0, 0.05),
    ],
)
def test_no_trials_bound_nothing(bound: Bound) -> None:
    assert (bound.lower, bound.upper) == (0.0, 1.0)
    assert math.isnan(bound.estimate)


# --- Verdicts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "margin", "higher_is_worse", "verdict"),
    [
        ((100, 10**5, 100, 10**5), 0.002, True, PASS),  # equal 0.1 % rates, plenty of answers
        ((0, 20000, 0, 20000), 0.002, True, PASS),  # no errors at all, enough answers
        ((0, 41, 0, 41), 0.002, True, INCONCLUSIVE),
        ((100, 10000, 100, 10000), 0.002, True, INCONCLUSIVE),
        ((300, 10000, 100, 10000), 0.002, True, FAIL),  # 3 % against 1 %
        ((30, 1000, 0, 1000), 0.002, True, FAIL),  # few events, but the exact side proves it
        ((3000, 10000, 3000, 10000), 0.05, False, PASS),  # a hit rate not worse by 5 points
        ((2000, 10000, 3000, 10000), 0.05, False, FAIL),  # 10 points worse
        ((290, 1000, 300, 1000), 0.05, False, INCONCLUSIVE),
    ],
)
def test_non_inferiority(
    counts: tuple[int, int, int, int], margin: float, higher_is_worse: bool, verdict: StatVerdict
) -> None:
    judgement = non_inferiority(*counts, margin, 0.05, higher_is_worse=higher_is_worse)
    assert judgement.verdict is verdict
    assert judgement.lower <= judgement.estimate <= judgement.upper
    assert judgement.limit == margin
    assert judgement.n == counts[1] + counts[3]


def test_alpha_fail_sets_the_bound_that_can_prove_harm() -> None:
    strict = non_inferiority(150, 10000, 100, 10000, 0.0, alpha=0.05, alpha_fail=0.001)
    loose = non_inferiority(150, 10000, 100, 10000, 0.0, alpha=0.05)
    assert (strict.alpha, strict.alpha_fail) == (0.05, 0.001)
    assert strict.upper == loose.upper
    assert strict.lower < loose.lower
    assert loose.verdict is FAIL
    assert strict.verdict is INCONCLUSIVE


@pytest.mark.parametrize(
    ("events", "trials", "limit", "higher_is_worse", "verdict"),
    [
        (0, 10000, 0.001, True, PASS),
        (0, 1000, 0.01, True, PASS),
        (0, 1000, 0.001, True, INCONCLUSIVE),
        (1, 50, 0.001, True, INCONCLUSIVE),  # even fixed-n, 1 in 50 barely proves > 0.1 %
        (3, 50, 0.001, True, FAIL),  # 3 stale answers in 50 audits do
        (30, 1000, 0.01, True, FAIL),
        (12, 1000, 0.01, True, INCONCLUSIVE),
        (400, 1000, 0.3, False, PASS),  # would-be hit rate above 30 %
        (200, 1000, 0.3, False, FAIL),
        (31, 100, 0.3, False, INCONCLUSIVE),
        (0, 0, 0.01, True, INCONCLUSIVE),
    ],
)
def test_limit_test(
    events: int, trials: int, limit: float, higher_is_worse: bool, verdict: StatVerdict
) -> None:
    judgement = limit_test(events, trials, limit, 0.05, higher_is_worse=higher_is_worse)
    assert judgement.verdict is verdict


def test_verdict_values_agree_with_the_controllers_verdict() -> None:
    assert StatVerdict.PASS.value == Verdict.PASS.value
    assert StatVerdict.FAIL.value == Verdict.FAIL.value
    assert StatVerdict.INCONCLUSIVE.value == "inconclusive"


# --- Sample-ratio mismatch ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "shares"),
    [((520, 480), (0.5, 0.5)), ((5200, 4800), (0.5, 0.5)), ((95, 905), (0.1, 0.9)),
     ((130, 870), (0.1, 0.9)), ((100, 510, 390), (0.1, 0.5, 0.4)), ((1, 0), (0.5, 0.5))],
)  # fmt: skip
def test_srm_e_value_matches_scipy(counts: tuple[int, ...], shares: tuple[float, ...]) -> None:
    total = sum(counts)
    prior = 100 * np.asarray(shares)
    log_e = scipy_stats.dirichlet_multinomial.logpmf(
        counts, prior, total
    ) - scipy_stats.multinomial.logpmf(counts, total, shares)
    result = srm_test(counts, shares, alpha=0.01)
    assert math.log(result.e_value) == pytest.approx(float(log_e), rel=1e-9, abs=1e-12)
    assert result.p_value == pytest.approx(min(1.0, math.exp(-float(log_e))))
    assert result.mismatch == (float(log_e) >= math.log(100))


@pytest.mark.parametrize(
    ("treatment", "control", "share", "mismatch"),
    [(0, 0, 0.1, False), (520, 480, 0.5, False), (5200, 4800, 0.5, True),
     (1000, 9000, 0.1, False), (1300, 8700, 0.1, True), (5, 0, 0.0, True)],
)  # fmt: skip
def test_cohort_split(treatment: int, control: int, share: float, mismatch: bool) -> None:
    result = cohort_split_test(treatment, control, share, alpha=0.01)
    assert result.mismatch is mismatch
    assert result.expected_shares == (share, 1 - share)


# --- Samples to a verdict ----------------------------------------------------------------


@pytest.mark.parametrize("limit", [0.01, 0.003, 0.001])
def test_samples_for_a_rare_harm_limit(limit: float) -> None:
    needed = samples_for_limit(0.0, limit, 0.05)
    assert needed is not None
    assert limit_test(0, needed, limit, 0.05).verdict is PASS
    assert limit_test(0, needed - 1, limit, 0.05).verdict is INCONCLUSIVE
    fixed_n = math.log(0.05) / math.log(1 - limit)  # Clopper-Pearson with zero events
    assert fixed_n < needed < 2 * fixed_n


@pytest.mark.parametrize(
    ("treatment", "control", "margin", "verdict"),
    [(0.01, 0.01, 0.002, PASS), (0.01, 0.01, 0.01, PASS), (0.03, 0.01, 0.002, FAIL),
     (0.0, 0.0, 0.002, PASS)],
)  # fmt: skip
def test_samples_for_a_difference(
    treatment: float, control: float, margin: float, verdict: StatVerdict
) -> None:
    needed = samples_for_difference(treatment, control, margin, 0.05)
    assert needed is not None

    def at(n: int) -> StatVerdict:
        half = n / 2
        return non_inferiority(treatment * half, half, control * half, half, margin, 0.05).verdict

    assert at(needed) is verdict
    assert at(needed - 1) is INCONCLUSIVE


def test_samples_grow_as_the_margin_shrinks_and_vanish_on_it() -> None:
    wide, narrow = (samples_for_difference(0.01, 0.01, m, 0.05) for m in (0.01, 0.002))
    assert wide is not None
    assert narrow is not None
    assert wide < narrow
    assert samples_for_difference(0.012, 0.01, 0.002, 0.05) is None
    assert samples_for_limit(0.001, 0.001, 0.05) is None
    assert samples_for_limit(0.0, 0.001, 0.05, max_n=100) is None


@pytest.mark.parametrize(
    ("needed", "have", "per_second", "more", "seconds"),
    [(4000, 1000, 0.5, 3000, 6000), (4000, 5000, 0.5, 0, 0), (4000, 0, 0.0, 4000, None),
     (None, 10, 1.0, None, None)],
)  # fmt: skip
def test_remaining(
    needed: int | None, have: float, per_second: float, more: float | None, seconds: float | None
) -> None:
    estimate = remaining(needed, have, per_second)
    assert (estimate.needed, estimate.more, estimate.seconds) == (needed, more, seconds)


# --- Invalid input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: mixture_proportion_bound(5, 4, 0.05),
        lambda: mixture_proportion_bound(-1, 4, 0.05),
        lambda: mixture_proportion_bound(1, math.inf, 0.05),
        lambda: mixture_proportion_bound(1, 4, 0.5),
        lambda: asymptotic_proportion_bound(1, 4, 0.0),
        lambda: sequential_rho(0.05, 0),
        lambda: BetaPrior(0, 1),
        lambda: BetaPrior.for_rate(0.0),
        lambda: BetaMixture(((0.5, BetaPrior()), (0.4, BetaPrior()))),
        lambda: non_inferiority(1, 10, 1, 10, -0.01, 0.05),
        lambda: limit_test(1, 10, 1.5, 0.05),
        lambda: srm_test((1, 2), (0.5, 0.6), 0.05),
        lambda: srm_test((1,), (1.0,), 0.05),
        lambda: srm_test((1, -2), (0.5, 0.5), 0.05),
    ],
)
def test_invalid_input_is_refused(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()


# --- Time-uniform coverage by simulation -------------------------------------------------
# 2,000 sequences of 2,000 draws, looked at every 50 draws: the share of sequences whose
# bound is EVER on the wrong side must stay within alpha (+ 0.01, two Monte Carlo standard
# errors at 2,000 sequences). A fixed-n interval looked at this often would not.

SEQUENCES, DRAWS, EVERY, ALPHA, TOLERANCE = 2000, 2000, 50, 0.05, 0.01
LOOKS = np.arange(EVERY, DRAWS + 1, EVERY)


def cumulative_events(seed: int, rate: float) -> np.ndarray:
    draws = np.random.default_rng(seed).random((SEQUENCES, DRAWS)) < rate
    return np.cumsum(draws, axis=1)[:, LOOKS - 1]


def ever(wrong: np.ndarray) -> float:
    return float(np.mean(np.any(wrong, axis=1)))


@pytest.mark.parametrize("rate", [0.3, 0.5])
def test_asymptotic_bound_covers_time_uniformly(rate: float) -> None:
    events = cumulative_events(11, rate)
    lowers, uppers = np.empty(events.shape), np.empty(events.shape)
    for (i, j), count in np.ndenumerate(events):
        bound = asymptotic_proportion_bound(int(count), int(LOOKS[j]), ALPHA)
        lowers[i, j], uppers[i, j] = bound.lower, bound.upper
    assert ever(uppers < rate) <= ALPHA + TOLERANCE
    assert ever(lowers > rate) <= ALPHA + TOLERANCE


def test_fixed_n_bound_looked_at_every_cycle_does_not_cover() -> None:
    # The reason for all this: the same looks with a fixed-n Wald bound miss far more often.
    rate = 0.3
    events = cumulative_events(11, rate)
    estimates = events / LOOKS
    z = float(scipy_stats.norm.ppf(1 - ALPHA))
    uppers = estimates + z * np.sqrt(estimates * (1 - estimates) / LOOKS)
    assert ever(uppers < rate) > 2 * ALPHA


@pytest.mark.parametrize("rate", [0.002, 0.01])
def test_mixture_bound_covers_rare_rates_time_uniformly(rate: float) -> None:
    events = cumulative_events(12, rate)
    prior = BetaMixture.for_limit(0.001)
    bound = functools.cache(lambda s, n: mixture_proportion_bound(s, n, ALPHA, prior))
    uppers = np.vectorize(lambda s, n: bound(int(s), int(n)).upper)(events, LOOKS)
    lowers = np.vectorize(lambda s, n: bound(int(s), int(n)).lower)(events, LOOKS)
    assert ever(uppers < rate) <= ALPHA + TOLERANCE
    assert ever(lowers > rate) <= ALPHA + TOLERANCE


@pytest.mark.parametrize(
    ("treatment_rate", "control_rate"), [(0.01, 0.005), (0.01, 0.01), (0.2, 0.15)]
)
def test_non_inferiority_errs_within_alpha_time_uniformly(
    treatment_rate: float, control_rate: float
) -> None:
    # The margin is the true difference: the worst case for both a false pass and a false fail.
    margin = treatment_rate - control_rate
    treatment = cumulative_events(13, treatment_rate)
    control = cumulative_events(14, control_rate)
    judge = functools.cache(lambda t, c, n: non_inferiority(t, n, c, n, margin, ALPHA).verdict)
    verdicts = np.vectorize(lambda t, c, n: judge(int(t), int(c), int(n)).value)(
        treatment, control, LOOKS
    )
    assert ever(verdicts == "pass") <= ALPHA + TOLERANCE
    assert ever(verdicts == "fail") <= ALPHA + TOLERANCE


@pytest.mark.parametrize("share", [0.5, 0.1])
def test_srm_false_alarms_stay_within_alpha_time_uniformly(share: float) -> None:
    treatment = cumulative_events(15, share)
    mismatch = np.vectorize(
        lambda t, n: cohort_split_test(int(t), int(n - t), share, ALPHA).mismatch
    )(treatment, LOOKS)
    assert ever(mismatch) <= ALPHA + TOLERANCE


def test_srm_detects_a_real_mismatch() -> None:
    treatment = cumulative_events(16, 0.56)  # 56 % where 50 % was asked for
    mismatch = np.vectorize(
        lambda t, n: cohort_split_test(int(t), int(n - t), 0.5, ALPHA).mismatch
    )(treatment, LOOKS)
    assert float(np.mean(mismatch[:, -1])) > 0.9
