"""The audit budget: a token bucket with the time passed in."""

from __future__ import annotations

import pytest

from app.service.budget import RateBudget


@pytest.mark.parametrize(("per_second", "calls", "allowed"), [
    (5.0, [0.0] * 10, 5),                          # a burst: one second's worth
    (5.0, [0.0] * 5 + [0.1] * 5, 5),               # 0.1 s refills half a token: none yet
    (5.0, [0.0] * 5 + [0.2] * 5, 6),               # 0.2 s refills one
    (5.0, [0.0] * 5 + [10.0] * 10, 10),            # a long pause refills only up to the burst
    (5.0, [i * 0.2 for i in range(50)], 50),       # exactly the rate: every call passes
    (5.0, [i * 0.1 for i in range(50)], 29),       # twice the rate: 5 + 4.9 s x 5 = 29.5
    (0.5, [0.0, 0.0, 1.0, 2.0, 2.5], 2),           # below one a second: bursts of one
    (0.0, [0.0] * 100, 100),                       # 0: no limit
])
def test_allowed_calls(per_second: float, calls: list[float], allowed: int) -> None:
    budget = RateBudget(per_second, now=0.0)
    assert sum(budget.take(t) for t in calls) == allowed
