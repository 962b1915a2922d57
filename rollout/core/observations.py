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
    NO_DATA = "no_data"  # too little traffic, an empty result, NaN/Inf, or no baseline yet
    ERROR = "error"  # the measurement itself failed (Prometheus unreachable, bad query)


@dataclass(frozen=True, slots=True)
class Measurement:
    """The raw result of a check's two queries, before any judgement."""

    value: float | None
    sample: float | None = None
    error: str | None = None


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
