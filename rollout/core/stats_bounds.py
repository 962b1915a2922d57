"""Anytime-valid one-sided bounds for a proportion and for a difference of two proportions.

"Anytime-valid" means the bounds may be looked at after every cycle and acted on whenever
they separate: the chance that a bound is *ever* on the wrong side of the true value, over
the whole stage, is at most its alpha. A fixed-n interval checked every cycle has no such
guarantee. Each `Bound` carries a lower and an upper bound that are each a one-sided
(1 - alpha) bound; pairing them is a two-sided confidence sequence at level 1 - 2 alpha.

What is implemented, and where it comes from:

* `asymptotic_*_bound` -- the asymptotic confidence sequence (AsympCS) of Waudby-Smith,
  Arbour, Sinha, Kennedy & Ramdas, "Time-uniform central limit theory and asymptotic
  confidence sequences", Annals of Statistics (2024), arXiv:2103.06476 (v7): the one-sided
  normal-mixture boundary (their eq. 134 in v7)

      mean +- sd * sqrt( 2 (n rho^2 + 1) / (n^2 rho^2) * log(1 + sqrt(n rho^2 + 1) / (2 alpha)) )

  with rho chosen so that the boundary is tightest at a target sample size n* (their
  eq. 161, with 2 alpha for the one-sided case):

      rho^2 = ( -2 log(2 alpha) + log(1 - 2 log(2 alpha)) ) / n*

  This is the form GrowthBook's gbstats uses for its sequential tests and safe rollouts
  (`sequential_rho`, `sequential_interval_halfwidth_one_sided` in
  packages/stats/gbstats/frequentist/tests.py; default n* = 5000); re-derived and written
  here, not copied. For a difference the mean is p_t - p_c, n = n_t + n_c, and
  sd^2 = n * (p_t (1-p_t) / n_t + p_c (1-p_c) / n_c), as gbstats does. It is only
  *asymptotically* valid: with few or no events the estimated sd is ~0 and the bound
  collapses onto the estimate.
* `mixture_proportion_bound` -- an exact, non-asymptotic confidence sequence for a Bernoulli
  rate: Robbins' beta-binomial mixture martingale (Robbins, "Statistical methods related to
  the law of the iterated logarithm", Ann. Math. Statist. 1970; Howard, Ramdas, McAuliffe &
  Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist.
  2021). For a candidate rate p, with S events in n trials,

      M_n(p) = B(a + S, b + n - S) / B(a, b) / ( p^S (1 - p)^(n - S) )

  is a nonnegative martingale with M_0 = 1 when p is the true rate, so by Ville's
  inequality P(exists n: M_n(p) >= 1/alpha) <= alpha. The set {p : M_n(p) < 1/alpha} is an
  interval (log M_n is convex in p) and its ends are found by bisection. Both ends come from
  one two-sided set, so each is a one-sided bound at alpha (conservatively: the two sides
  share the alpha). Valid for every n including zero events, hence the rare-harm bound; the
  prior is the tuning knob: a Beta(a, b), or a weighted mixture of Betas (`BetaMixture`; a
  mixture of martingales is a martingale, and log M_n stays convex). `BetaMixture.for_limit`
  puts 90 % on a Beta centred on a limit (tight when the rate is ~0) and 10 % on Jeffreys'
  Beta(1/2, 1/2) (so that a few events among few trials can still prove a rate above it).
* `mixture_difference_bound` -- the exact bounds of the two cohorts combined by a union
  bound: upper(p_t) - lower(p_c) with each cohort's sequence at alpha / 2.
* `difference_bound` -- what a non-inferiority test uses: the tighter of the AsympCS bound
  and the exact bound, each at alpha / 2, so the union bound keeps the total at alpha. The
  AsympCS side is tight once events are plentiful (about half the width of the exact
  union-bound side) but only asymptotically valid, so it is used only when each cohort has
  at least `min_events` (default 10) events and as many non-events -- the usual rule of
  thumb for a normal approximation of a binomial; below that only the exact side speaks,
  which keeps "0 errors in 82 answers" from proving anything. (A single rate needs no such
  combination: the exact sequence is about as tight as the AsympCS there.)

Counts may be floats: Prometheus `increase()` extrapolates. Pure Python (math only).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

DEFAULT_TARGET_N: Final = 5000.0  # gbstats' sequential_tuning_parameter default
DEFAULT_MIN_EVENTS: Final = 10.0  # per cohort, events and non-events, for the AsympCS side
_BISECTIONS: Final = 100


@dataclass(frozen=True, slots=True)
class Bound:
    """An estimate with a one-sided (1 - alpha) lower and upper anytime-valid bound.

    `n` is the number of trials (both cohorts for a difference); `estimate` is NaN when
    there are no trials, and the bounds are then the whole range.
    """

    estimate: float
    lower: float
    upper: float
    n: float
    alpha: float
    method: str


@dataclass(frozen=True, slots=True)
class BetaPrior:
    """The Beta(a, b) mixing distribution of the beta-binomial mixture martingale."""

    a: float = 0.5
    b: float = 0.5

    def __post_init__(self) -> None:
        if not (self.a > 0 and self.b > 0):
            raise ValueError(f"Beta prior parameters must be positive, got {self.a}, {self.b}")

    @classmethod
    def for_rate(cls, rate: float, a: float = 0.5) -> BetaPrior:
        """A prior with mean `rate` and shape `a`: tight for rates near `rate` (a limit)."""
        if not 0 < rate < 1:
            raise ValueError(f"rate must be in (0, 1), got {rate}")
        return cls(a=a, b=a * (1 - rate) / rate)


JEFFREYS: Final = BetaPrior(0.5, 0.5)


@dataclass(frozen=True, slots=True)
class BetaMixture:
    """A weighted mixture of Beta priors (weights sum to 1)."""

    components: tuple[tuple[float, BetaPrior], ...]

    def __post_init__(self) -> None:
        weights = [weight for weight, _ in self.components]
        if not weights or min(weights) <= 0 or not math.isclose(sum(weights), 1.0):
            raise ValueError(f"mixture weights must be positive and sum to 1, got {weights}")

    @classmethod
    def for_limit(cls, limit: float, weight: float = 0.9) -> BetaMixture:
        """`weight` on a prior centred on `limit`, the rest on Jeffreys' prior."""
        return cls(((weight, BetaPrior.for_rate(limit)), (1 - weight, JEFFREYS)))


Prior = BetaPrior | BetaMixture


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")


def _check_counts(events: float, trials: float) -> None:
    if not (math.isfinite(events) and math.isfinite(trials)):
        raise ValueError(f"counts must be finite, got {events}/{trials}")
    if events < 0 or trials < 0 or events > trials:
        raise ValueError(f"need 0 <= events <= trials, got {events}/{trials}")


# --- Asymptotic confidence sequence (Waudby-Smith et al.) ------------------------------


def sequential_rho(alpha: float, target_n: float = DEFAULT_TARGET_N) -> float:
    """The mixture parameter rho making the one-sided boundary tightest at `target_n`."""
    _check_alpha(alpha)
    if target_n <= 0:
        raise ValueError(f"target_n must be positive, got {target_n}")
    log_term = -2 * math.log(2 * alpha)
    return math.sqrt((log_term + math.log(log_term + 1)) / target_n)


def unit_margin(n: float, alpha: float, target_n: float = DEFAULT_TARGET_N) -> float:
    """The one-sided AsympCS half-width for unit variance after n observations."""
    rho2 = sequential_rho(alpha, target_n) ** 2
    if n <= 0:
        return math.inf
    growth = n * rho2 + 1
    return math.sqrt(2 * growth / (n * n * rho2) * math.log(1 + math.sqrt(growth) / (2 * alpha)))


def asymptotic_proportion_bound(
    events: float, trials: float, alpha: float, target_n: float = DEFAULT_TARGET_N
) -> Bound:
    """AsympCS bounds for a rate (events / trials); degenerate with zero events."""
    _check_counts(events, trials)
    if trials == 0:
        return Bound(math.nan, 0.0, 1.0, 0.0, alpha, "asymptotic-cs")
    rate = events / trials
    half = math.sqrt(rate * (1 - rate)) * unit_margin(trials, alpha, target_n)
    return Bound(rate, max(0.0, rate - half), min(1.0, rate + half), trials, alpha, "asymptotic-cs")


def asymptotic_difference_bound(
    treatment_events: float,
    treatment_trials: float,
    control_events: float,
    control_trials: float,
    alpha: float,
    target_n: float = DEFAULT_TARGET_N,
) -> Bound:
    """AsympCS bounds for rate(treatment) - rate(control)."""
    _check_counts(treatment_events, treatment_trials)
    _check_counts(control_events, control_trials)
    total = treatment_trials + control_trials
    if treatment_trials == 0 or control_trials == 0:
        return Bound(math.nan, -1.0, 1.0, total, alpha, "asymptotic-cs")
    p_t, p_c = treatment_events / treatment_trials, control_events / control_trials
    variance = p_t * (1 - p_t) / treatment_trials + p_c * (1 - p_c) / control_trials
    half = math.sqrt(variance * total) * unit_margin(total, alpha, target_n)
    diff = p_t - p_c
    return Bound(diff, max(-1.0, diff - half), min(1.0, diff + half), total, alpha, "asymptotic-cs")


# --- Beta-binomial mixture martingale (Robbins) ------------------------------------------


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * math.log(y)


def _log_marginal(events: float, trials: float, prior: Prior) -> float:
    """log of the prior-mixed likelihood, over the binomial coefficient."""
    if isinstance(prior, BetaPrior):
        prior = BetaMixture(((1.0, prior),))
    terms = [
        math.log(weight) + _log_beta(beta.a + events, beta.b + trials - events)
        - _log_beta(beta.a, beta.b)
        for weight, beta in prior.components
    ]  # fmt: skip
    top = max(terms)
    return top + math.log(sum(math.exp(term - top) for term in terms))


def log_mixture_martingale(
    rate: float, events: float, trials: float, prior: Prior = JEFFREYS
) -> float:
    """log M_n(rate): the evidence against `rate`; >= log(1/alpha) rejects it."""
    _check_counts(events, trials)
    if not 0 < rate < 1:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    marginal = _log_marginal(events, trials, prior)
    return marginal - _xlogy(events, rate) - _xlogy(trials - events, 1 - rate)


def _bisect(inside: float, outside: float, is_inside: Callable[[float], bool]) -> float:
    """The boundary between `inside` (where the predicate holds) and `outside`."""
    for _ in range(_BISECTIONS):
        middle = (inside + outside) / 2
        if middle in (inside, outside):
            break
        if is_inside(middle):
            inside = middle
        else:
            outside = middle
    return outside  # the conservative side: the first value known (or assumed) rejected


def mixture_proportion_bound(
    events: float, trials: float, alpha: float, prior: Prior = JEFFREYS
) -> Bound:
    """Exact anytime-valid bounds for a rate, valid with zero or few events."""
    _check_counts(events, trials)
    _check_alpha(alpha)
    if trials == 0:
        return Bound(math.nan, 0.0, 1.0, 0.0, alpha, "beta-binomial-mixture")
    rate = events / trials
    marginal = _log_marginal(events, trials, prior)
    threshold = math.log(1 / alpha)

    def accepted(p: float) -> bool:
        return marginal - _xlogy(events, p) - _xlogy(trials - events, 1 - p) < threshold

    upper = 1.0 if events == trials else _bisect(rate, 1.0, accepted)
    lower = 0.0 if events == 0 else _bisect(rate, 0.0, accepted)
    return Bound(rate, lower, upper, trials, alpha, "beta-binomial-mixture")


def mixture_difference_bound(
    treatment_events: float,
    treatment_trials: float,
    control_events: float,
    control_trials: float,
    alpha: float,
    prior: Prior = JEFFREYS,
) -> Bound:
    """Exact bounds for rate(treatment) - rate(control): each cohort's sequence at alpha/2."""
    treatment = mixture_proportion_bound(treatment_events, treatment_trials, alpha / 2, prior)
    control = mixture_proportion_bound(control_events, control_trials, alpha / 2, prior)
    return Bound(
        treatment.estimate - control.estimate,
        treatment.lower - control.upper,
        treatment.upper - control.lower,
        treatment_trials + control_trials,
        alpha,
        "beta-binomial-mixture",
    )


def difference_bound(
    treatment_events: float,
    treatment_trials: float,
    control_events: float,
    control_trials: float,
    alpha: float,
    target_n: float = DEFAULT_TARGET_N,
    prior: Prior = JEFFREYS,
    min_events: float = DEFAULT_MIN_EVENTS,
) -> Bound:
    """The tighter of the AsympCS and the exact bound, each at alpha/2 (union bound).

    The AsympCS side counts only when every cohort has >= `min_events` events and
    non-events; otherwise the exact side alone gives the bound (still at alpha/2).
    """
    counts = (treatment_events, treatment_trials, control_events, control_trials)
    exact = mixture_difference_bound(*counts, alpha / 2, prior)
    clt_holds = min(
        treatment_events,
        treatment_trials - treatment_events,
        control_events,
        control_trials - control_events,
    ) >= max(min_events, 1)
    if not clt_holds:
        return Bound(exact.estimate, exact.lower, exact.upper, exact.n, alpha, exact.method)
    asymptotic = asymptotic_difference_bound(*counts, alpha / 2, target_n)
    return Bound(
        exact.estimate,
        max(asymptotic.lower, exact.lower),
        min(asymptotic.upper, exact.upper),
        exact.n,
        alpha,
        "asymptotic-cs+beta-binomial-mixture",
    )
