"""Part 4: what the cache layer adds to a request that misses everywhere."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from app import contract
from bench.service_bench.plan import BENCH, QUESTION, BenchError
from bench.service_bench.report import Row, say, verdict
from bench.service_bench.rig import Rig, counter_delta
from bench.service_bench.rounds import alternate, medians, ratio_text, spread
from bench.service_bench.wrk import WrkResult, run_wrk

# Targets (issue 15): what the cache layer may add to a request that misses everywhere.
TARGET_MISS_OVERHEAD_MS = 0.5
TARGET_MISS_CPU_US = 300.0


def part4_miss_overhead(rig: Rig) -> tuple[list[Row], dict[str, Any]]:
    plan = rig.plan
    say(f"\n[4] miss path: all flags on, every request a miss, vs caching off: wrk -t1 "
        f"-c{plan.miss_connections} -d{plan.seconds}s x {plan.rounds} rounds, ABBA; "
        f"AI_LATENCY_SCALE=0")
    say("    (provider latency 0: it is identical in both variants and cancels out of the "
        "difference; a sleep would only add timer jitter and hide background work; one "
        "connection, so p50 is service time, not queueing)")
    script = BENCH / "unique_query.lua"
    url = rig.service.url + rig.query_path
    probe_count = iter(range(1_000_000))

    def probe() -> str:
        return f"{QUESTION} probe {uuid.uuid4().hex} {next(probe_count)}"

    variants: dict[str, tuple[dict[str, Any], Callable[[str], bool]]] = {
        "on": ({"shadow": True, "l2": True, "l1_percent": 100},
               lambda s: s == "ai-l2; fwd=miss, ai-l1; fwd=miss"),
        "off": ({"shadow": False, "l2": False, "l1_percent": 0},
                lambda s: s == "ai-l2; fwd=bypass, ai-l1; fwd=bypass"),
    }

    def switch(name: str) -> None:
        flags, expected = variants[name]
        rig.set_flags(**flags)
        rig.wait_for_cache_status(probe, expected, f"flags {name}")

    def wrk_env(tag: str) -> dict[str, str]:
        return {"BENCH_RUN": f"{tag}-{uuid.uuid4().hex[:12]}", "BENCH_CLIENT": str(rig.client),
                "BENCH_AUTH": rig.auth["Authorization"]}

    runs: dict[str, list[WrkResult]] = {"on": [], "off": []}
    hit_checks: list[float] = []
    for name in ("on", "off"):  # warm-up, not recorded
        switch(name)
        run_wrk(url, script, wrk_env("warm"), seconds=plan.warmup_seconds,
                connections=plan.miss_connections)
    for r in range(plan.rounds):
        for name in alternate(r, ["on", "off"]):
            switch(name)
            before = rig.counters()
            result = run_wrk(url, script, wrk_env(f"r{r}{name}"), seconds=plan.seconds,
                             connections=plan.miss_connections, pid=rig.service.pid)
            after = rig.counters()
            hits = counter_delta(before, after, contract.METRIC_CACHE_HITS)
            misses = counter_delta(before, after, contract.METRIC_CACHE_MISSES,
                            contract.LAYER_QUERY_RESULT, contract.MODE_SERVE)
            if hits or (name == "on" and misses < result.requests):
                raise BenchError(f"round {r + 1} {name}: {hits:.0f} cache hits and {misses:.0f}"
                                 f" L1 misses for {result.requests} requests")
            hit_checks.append(hits)
            runs[name].append(result)
            say(f"    round {r + 1} flags {name:3s} {result.rps:7.0f} req/s  p50 "
                f"{result.p50_ms:6.3f} ms  p99 {result.p99_ms:6.3f} ms  CPU "
                f"{result.cpu_us_per_request or 0:5.0f} us/req")
    rig.set_flags(shadow=False, l2=False, l1_percent=0)
    say("    check: every 'on' request missed L1 and L2 (metrics), no cache hits at all")

    on, off = runs["on"], runs["off"]
    added_p50 = [a.p50_ms - b.p50_ms for a, b in zip(on, off, strict=True)]
    added_p99 = [a.p99_ms - b.p99_ms for a, b in zip(on, off, strict=True)]
    added_cpu = [(a.cpu_us_per_request or 0) - (b.cpu_us_per_request or 0)
                 for a, b in zip(on, off, strict=True)]
    med = medians(runs)
    rows = [
        Row("4a miss-path added p50 (all on vs off)",
            f"{med['on']['p50_ms']:.3f} vs {med['off']['p50_ms']:.3f} ms",
            f"<= {TARGET_MISS_OVERHEAD_MS:.1f} ms", ratio_text(added_p50, " ms"),
            verdict(spread(added_p50)[0] <= TARGET_MISS_OVERHEAD_MS)),
        Row("4b miss-path added p99 (all on vs off)",
            f"{med['on']['p99_ms']:.3f} vs {med['off']['p99_ms']:.3f} ms", "-",
            ratio_text(added_p99, " ms"), "info"),
        Row("4c miss-path added server CPU per request",
            f"{med['on']['cpu_us']:.0f} vs {med['off']['cpu_us']:.0f} us",
            f"<= {TARGET_MISS_CPU_US:.0f} us", ratio_text(added_cpu, " us"),
            verdict(spread(added_cpu)[0] <= TARGET_MISS_CPU_US)),
    ]
    data = {
        "provider_latency_scale": 0.0,
        "wrk": {"threads": 1, "connections": plan.miss_connections, "seconds": plan.seconds,
                "rounds": plan.rounds},
        "medians": med, "added_p50_ms": spread(added_p50)[0],
        "added_p99_ms": spread(added_p99)[0], "added_cpu_us": spread(added_cpu)[0],
        "per_round": {"added_p50_ms": added_p50, "added_cpu_us": added_cpu},
        "runs": {name: [asdict(x) for x in rs] for name, rs in runs.items()},
    }
    return rows, data
