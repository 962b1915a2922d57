"""What one evaluation cycle saw: each check's measurement and verdict, and the flags the
service reports. Built by the runner from Prometheus; read by `decide`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from rollout.core.flags import FlagSettings


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105  (a verdict, not a password)
    FAIL = "fail"
    # A statistical check whose bound shows neither: hold and gather more (DESIGN.md §7).
    INCONCLUSIVE = "inconclusive"
    NO_DATA = "no_data"  # too little traffic, an empty result, NaN/Inf, or no baseline yet
    ERROR = "error"  # the measurement itself failed (Prometheus unreachable, bad query)


@dataclass(frozen=True, slots=True)
class Measurement:
    """The raw result of a check's two queries, before any judgement.

    For a statistical check `value` is the events and `sample` the trials since the evidence
    began, `control` the same for the comparison cohort, and `elapsed_seconds` how long the
    counts ran (the current rate, for "how long until a verdict").
    """

    value: float | None
    sample: float | None = None
    error: str | None = None
    control: Measurement | None = None
    elapsed_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a statistical verdict rests on, for the log, the status page and notifications.

    `estimate`, `lower` and `upper` are the rate (limit test) or the difference stage minus
    comparison (non-inferiority); the bound on the harmful side is at `alpha`, the other at
    `alpha_fail`. `limit` is the absolute limit or the margin. `needed_more` is how many more
    trials a verdict needs at the current estimates, `seconds_more` about how long that is at
    the current traffic (None: not computable, e.g. the estimates sit on the limit).
    """

    test: str
    comparison: str
    estimate: float
    lower: float
    upper: float
    limit: float
    higher_is_worse: bool
    alpha: float
    alpha_fail: float
    events: float
    trials: float
    control_events: float | None = None
    control_trials: float | None = None
    needed_more: float | None = None
    seconds_more: float | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """One check in one cycle: what was measured, against what, and the verdict.

    `limit` is the resolved threshold (a relative one already multiplied out), None when
    there is nothing to compare with. `message` is the human line used in reasons and logs.
    """

    check: str
    verdict: Verdict
    value: float | None
    sample: float | None
    limit: float | None
    message: str
    error: str | None = None
    evidence: Evidence | None = None
    # A baseline check's counts (events, trials), recorded for the comparisons that follow.
    counts: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class Observations:
    """Everything one cycle observed.

    `flags_match` says whether the service's reported flags (`ai_agent_flag_state`) equal
    the current stage's; `flags_matching_since` is when the runner first saw them match
    without interruption (None if it does not know, in which case `decide` counts from the
    first cycle that reports a match).
    """

    at: datetime
    checks: tuple[Observation, ...] = ()
    flags_match: bool = False
    reported_flags: FlagSettings | None = None
    flags_matching_since: datetime | None = None

    def get(self, check_name: str) -> Observation | None:
        for observation in self.checks:
            if observation.check == check_name:
                return observation
        return None
