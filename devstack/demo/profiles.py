"""How fast the demo runs: the plan's days in seconds, the controller's interval, the traffic
rate, and where the demo keeps its files."""

from __future__ import annotations

from dataclasses import dataclass, field

from devstack.demo.plan import PlanEdit
from devstack.paths import REPO_ROOT, RUN_DIR

DEMO_DIR = RUN_DIR / "demo"
# One folder per run: its plan, its Prometheus TSDB (for `rollout replay`), its record.
RUNS_DIR = DEMO_DIR / "runs"
KEEP_RUNS = 5
DEFAULT_CHART = REPO_ROOT / "docs" / "rollout-demo.png"
RULE_FILES = sorted((REPO_ROOT / "alerts" / "rules").glob("*.yml"))
DAY = 86400.0


@dataclass(frozen=True)
class Profile:
    """How far the plan is compressed, and the traffic that lets its checks decide within
    their (scaled) bakes: `rollout plan check .run/demo/plan.yaml --traffic RATE`."""

    day_seconds: float  # one plan day lasts this many seconds (the plan's time_scale)
    interval: float  # ROLLOUT_INTERVAL_SECONDS
    scrape: float  # Prometheus scrape and rule evaluation interval
    rate: float  # requests per second over both replicas (97 % queries, 3 % note writes)
    min_window: float | None  # None: the plan's own (30 s)
    min_sample_factor: float  # 1: the plan's minimum samples (threshold checks only)
    max_minutes: float  # give up (and say where it got stuck) after this long
    # Deviations from the default plan's statistics (margins, limits, error levels), each
    # written into the derived plan with its reason and printed at the start.
    edits: tuple[PlanEdit, ...] = field(default=())


# The binding stage is l1-10: its cohort is 3 of the 20 workspaces (sticky per workspace),
# 17 % of the traffic with seed 24, and with no errors the cohort's error-rate gate needs
# ~4 800 queries (both cohorts) to show "within +1 pp of the control" at 95 %; its bake is
# 4 plan days. So rate x day_seconds must be >= ~1 300 for it to decide within its bake, and
# the 29 plan days of bakes must fit in ~8 minutes with everything else. At 100 requests/s
# the demo uses about half of one core (measured: 3 min 32 s of CPU in an 8 min 18 s run
# at 85/s), so the rate is not what limits it on 2 cores.
FULL = Profile(day_seconds=15.0, interval=2.0, scrape=1.0, rate=100.0, min_window=None,
               min_sample_factor=1.0, max_minutes=9.0)
# Days of 5 s: l1-10's bake is 20 s, ~1 900 queries at this rate, too few for the +1 pp
# margin; the quick profile widens that one gate's margin (see QUICK_EDITS) and shortens
# min_window to 10 s, which leaves the baseline's 10 s window short of its 1 000 queries.
QUICK_EDITS = (
    PlanEdit("checks.l1_cohort_error_rate_vs_control.margin", 0.03,
             "quick run: in l1-10's 20 s bake the 10 % cohort (3 of 20 workspaces, 17 % of "
             "the traffic) sees ~300 queries; with no errors +3 pp is shown after ~1 500 "
             "queries (both cohorts), +1 pp would need ~4 800 (≈50 s)"),
)
QUICK = Profile(day_seconds=5.0, interval=1.0, scrape=1.0, rate=100.0, min_window=10.0,
                min_sample_factor=0.5, max_minutes=4.5, edits=QUICK_EDITS)


# Audits of served L1 hits per second and replica. The service's default cap (5/s) bounds the
# audit CPU in production, where the stale-rate gates have days to count audits; the demo
# compresses days into seconds, and its gates need every served hit audited (~45/s over both
# replicas at l1-100, ~5 ms of CPU each).
AUDIT_CAP = 50.0


def audit_note(cap: float) -> str:
    return (f"L1_AUDIT_MAX_PER_SECOND 5 → {cap:g} per replica: the demo compresses plan days "
            "into seconds, and the stale-rate gates count audited L1 hits")


# The replicas' Redis timeout. The service's 50 ms is right for a dedicated host; on this
# shared 2-core machine a CPU stall of the replica or of Redis exceeds it now and then (seen:
# a lookup burst timing out, the breaker opening, and an invalidation that one replica could
# not write while the other kept serving the entries it should have dropped: real stale
# answers, which the integrity checks rightly refuse to pass). The demo shows the rollout,
# not a Redis outage, so it gives Redis more time; printed at the start.
REDIS_TIMEOUT = 0.5


def redis_timeout_note(seconds: float) -> str:
    return (f"REDIS_TIMEOUT_SECONDS 0.05 → {seconds:g}: CPU stalls on a shared 2-core machine "
            "must not turn into lost invalidations (stale answers) during the demo")


class DemoFailed(RuntimeError):
    """The rollout did not do what the demo expects (stuck, no rollback, ...)."""

