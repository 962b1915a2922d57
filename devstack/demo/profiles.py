"""How fast the demo runs: the plan's days in seconds, the controller's interval, the traffic
rate, and where the demo keeps its files."""

from __future__ import annotations

from dataclasses import dataclass

from devstack.paths import REPO_ROOT, RUN_DIR

DEMO_DIR = RUN_DIR / "demo"
DEFAULT_CHART = REPO_ROOT / "docs" / "rollout-demo.png"
RULE_FILES = sorted((REPO_ROOT / "alerts" / "rules").glob("*.yml"))
DAY = 86400.0


@dataclass(frozen=True)
class Profile:
    """How far the plan is compressed, and the traffic that makes its gates judgeable."""

    day_seconds: float  # one plan day lasts this many seconds (ROLLOUT_TIME_SCALE)
    interval: float  # ROLLOUT_INTERVAL_SECONDS
    scrape: float  # Prometheus scrape and rule evaluation interval
    rate: float  # requests per second over both replicas
    min_window: float | None  # None: the plan's own (30 s)
    min_sample_factor: float  # 1: the plan's minimum samples
    max_minutes: float  # give up (and say where it got stuck) after this long


# 60 req/s: the 10 % cohort (3 of 20 workspaces, ~17 % of the traffic with seed 24) sees
# ~300 queries per 30 s window, above the cohort gates' minimum of 200.
# ~6 min on a quiet 2-core machine; giving up at 9 keeps even a stuck run under 10 minutes.
FULL = Profile(day_seconds=10.0, interval=2.0, scrape=1.0, rate=60.0, min_window=None,
               min_sample_factor=1.0, max_minutes=9.0)
QUICK = Profile(day_seconds=2.0, interval=1.0, scrape=1.0, rate=55.0, min_window=10.0,
                min_sample_factor=0.3, max_minutes=4.0)


class DemoFailed(RuntimeError):
    """The rollout did not do what the demo expects (stuck, no rollback, ...)."""

