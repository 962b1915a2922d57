"""The statistics behind every decision (DESIGN.md section 7): one import for callers.

Implemented, with the exact formulas and citations in the two modules' docstrings:

* `stats_bounds` -- one-sided anytime-valid bounds for a proportion and for a difference of
  two proportions: the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha,
  Kennedy & Ramdas, "Time-uniform central limit theory and asymptotic confidence
  sequences" (Ann. Statist. 2024, arXiv:2103.06476), in the one-sided normal-mixture form
  with rho tuned for a target sample size that GrowthBook's gbstats uses; and an exact
  rare-harm bound valid with zero events at any time, Robbins' (1970) beta-binomial mixture
  martingale with Ville's inequality (Howard et al., Ann. Statist. 2021) -- no union bound
  over time.
* `stats_design` -- verdicts pass / fail / inconclusive (non-inferiority with a margin, a
  rate against an absolute limit), the sample-ratio-mismatch test of Lindon & Malek,
  "Anytime-valid inference for multinomial count data" (NeurIPS 2022), and the samples a
  verdict needs at given true rates.

Pure Python (math only): rollout.core stays free of I/O and heavy libraries.
"""

from __future__ import annotations

from rollout.core.stats_bounds import (
    DEFAULT_MIN_EVENTS,
    DEFAULT_TARGET_N,
    JEFFREYS,
    BetaMixture,
    BetaPrior,
    Bound,
    Prior,
    asymptotic_difference_bound,
    asymptotic_proportion_bound,
    difference_bound,
    log_mixture_martingale,
    mixture_difference_bound,
    mixture_proportion_bound,
    sequential_rho,
    unit_margin,
)
from rollout.core.stats_design import (
    DEFAULT_SRM_CONCENTRATION,
    Judgement,
    SampleEstimate,
    SrmResult,
    StatVerdict,
    cohort_split_test,
    limit_test,
    non_inferiority,
    remaining,
    samples_for_difference,
    samples_for_limit,
    srm_test,
)

__all__ = [
    "DEFAULT_MIN_EVENTS",
    "DEFAULT_SRM_CONCENTRATION",
    "DEFAULT_TARGET_N",
    "JEFFREYS",
    "BetaMixture",
    "BetaPrior",
    "Bound",
    "Judgement",
    "Prior",
    "SampleEstimate",
    "SrmResult",
    "StatVerdict",
    "asymptotic_difference_bound",
    "asymptotic_proportion_bound",
    "cohort_split_test",
    "difference_bound",
    "limit_test",
    "log_mixture_martingale",
    "mixture_difference_bound",
    "mixture_proportion_bound",
    "non_inferiority",
    "remaining",
    "samples_for_difference",
    "samples_for_limit",
    "sequential_rho",
    "srm_test",
    "unit_margin",
]
