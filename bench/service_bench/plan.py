"""What a run is made of: its plan (full or quick), the fixtures the parts share, and the
error a part raises when it cannot measure what it promised."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
RESULTS = BENCH / "results" / "latest.json"

QUESTION = "How has the patient's sleep changed since starting sertraline?"
NOTES = (
    "Sleeping 5 hours a night, waking at 3 am. Started sertraline 50 mg this week.",
    "Sleep improving: 6 hours, fewer awakenings since starting sertraline.",
    "Reports 7 hours of sleep. Mood brighter. Mild nausea in the mornings.",
    "Anxious about work deadlines; sleep back to 6 hours. Practising sleep hygiene.",
    "Sleeping 7 to 8 hours. No nausea. Sertraline continued at 50 mg.",
    "Weekend travel disrupted sleep; otherwise stable. Appetite normal.",
    "Nightmares reduced. Sleep onset under 20 minutes most nights.",
    "Stable on sertraline; sleeping well; discussed tapering plan for later this year.",
)

# The service's default Redis timeout is 50 ms. On this shared 2-CPU machine a scheduler stall
# can exceed that, which would send a hit down the fail-open fresh path (or make the ceiling
# answer 500) and measure the stall, not the hit path. A successful request never waits for
# the timeout, so raising it changes nothing else; both servers get the same value.
REDIS_TIMEOUT_SECONDS = 1.0


class BenchError(RuntimeError):
    """The benchmark could not measure what it promised (a process died, a check failed)."""


@dataclass(frozen=True, slots=True)
class Plan:
    quick: bool
    rounds: int
    seconds: int  # per wrk run
    warmup_seconds: int
    connections: int  # L1-hit runs
    miss_connections: int  # miss-path runs
    sizes: tuple[int, int]  # cached answers present, small and large
    bump_calls: int  # timed invalidations per size
    scan_calls: tuple[int, int]  # timed SCAN invalidations per size


FULL = Plan(quick=False, rounds=5, seconds=5, warmup_seconds=2, connections=16,
            miss_connections=1, sizes=(1_000, 1_000_000), bump_calls=2_000, scan_calls=(20, 3))
QUICK = Plan(quick=True, rounds=3, seconds=2, warmup_seconds=1, connections=16,
             miss_connections=1, sizes=(1_000, 100_000), bump_calls=500, scan_calls=(10, 3))
