"""Part 1: L1 hits through the whole service against the ceiling, with the service's own
metrics as proof that every request was a hit."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from app import contract
from app.cache.keys import KeyBuilder
from bench.service_bench.plan import BENCH, QUESTION, BenchError
from bench.service_bench.report import Row, say, verdict
from bench.service_bench.rig import CEILING_KEY, Rig, counter_delta
from bench.service_bench.rounds import median, medians, rotate
from bench.service_bench.wrk import WrkResult, run_wrk

# Targets (issue 2, "Benchmark").
TARGET_RPS_RATIO = 0.7  # service req/s >= 0.7 x ceiling
TARGET_P50_RATIO = 1.5  # service p50 <= 1.5 x ceiling


def part1_l1_hit(rig: Rig) -> tuple[list[Row], dict[str, Any]]:
    plan = rig.plan
    say(f"\n[1] L1 hit vs ceiling: wrk -t1 -c{plan.connections} -d{plan.seconds}s x "
        f"{plan.rounds} rounds per variant, rotated order")
    # The last rollout stage (`l1-100`): shadow off, L2 on, L1 at 100 %.
    rig.set_flags(shadow=False, l2=True, l1_percent=100)
    hit = rig.wait_for_cache_status(lambda: QUESTION, lambda s: s.endswith("ai-l1; hit"),
                                    "an L1 hit")
    rig.wait_for_cache_status(lambda: QUESTION, lambda s: s.endswith("ai-l1; hit"),
                              "an L1 hit (audit off)", base=rig.no_audit.url)
    keys = KeyBuilder(rig.key_secret.encode(), "ai-cache")
    entry = keys.l1(rig.workspace, rig.client, QUESTION).entry
    entry_bytes = int(rig.sync_redis.strlen(entry))
    if entry_bytes == 0:
        raise BenchError(f"the warmed L1 entry {entry} is not in Redis")
    filler = (hit.json()["answer"] + " ") * (entry_bytes // 10 + 1)
    rig.sync_redis.set(CEILING_KEY, filler[:entry_bytes].encode())
    ceiling_response = rig.http.post(f"{rig.ceiling.url}{rig.query_path}", headers=rig.auth,
                                     json={"query": QUESTION, "client_id": str(rig.client)})
    say(f"    L1 entry {entry_bytes} B in Redis; response bodies: service "
        f"{len(hit.content)} B, ceiling {len(ceiling_response.content)} B")

    body = json.dumps({"query": QUESTION, "client_id": str(rig.client)})
    env = {"BENCH_BODY": body, "BENCH_AUTH": rig.auth["Authorization"]}
    script = BENCH / "post_query.lua"
    servers = {"service": rig.service, "no-audit": rig.no_audit, "ceiling": rig.ceiling}
    services = ("service", "no-audit")
    before = {name: rig.counters(servers[name].url) for name in services}
    served = dict.fromkeys(services, 0)
    for name, server in servers.items():  # warm-up, not recorded
        warm = run_wrk(server.url + rig.query_path, script, env,
                       seconds=plan.warmup_seconds, connections=plan.connections)
        if name in served:
            served[name] += warm.requests
    runs: dict[str, list[WrkResult]] = {name: [] for name in servers}
    for r in range(plan.rounds):
        for name in rotate(r, list(servers)):
            result = run_wrk(servers[name].url + rig.query_path, script, env,
                             seconds=plan.seconds, connections=plan.connections,
                             pid=servers[name].pid)
            runs[name].append(result)
            if name in served:
                served[name] += result.requests
            say(f"    round {r + 1} {name:8s} {result.rps:7.0f} req/s  p50 {result.p50_ms:6.2f} ms"
                f"  p99 {result.p99_ms:6.2f} ms  CPU {result.cpu_us_per_request or 0:5.0f} us/req")
    checks: dict[str, dict[str, float]] = {}
    for name in services:
        after = rig.counters(servers[name].url)
        hits = counter_delta(before[name], after, contract.METRIC_CACHE_HITS,
                      contract.LAYER_QUERY_RESULT, contract.MODE_SERVE)
        misses = counter_delta(before[name], after, contract.METRIC_CACHE_MISSES,
                        contract.LAYER_QUERY_RESULT)
        if misses or hits < served[name]:
            raise BenchError(f"{name}: not every request was an L1 hit: {hits:.0f} hits and "
                             f"{misses:.0f} misses for {served[name]} requests")
        checks[name] = {"l1_hits": hits, "l1_misses": misses, "requests": served[name]}
    say("    check: every request to both services was an L1 hit (their metrics: "
        + ", ".join(f"{n} {c['l1_hits']:.0f} hits for {c['requests']:.0f} requests"
                    for n, c in checks.items()) + ")")

    def ratio(name: str, metric: Callable[[WrkResult], float]) -> float:
        pairs = zip(runs[name], runs["ceiling"], strict=True)
        return median([metric(a) / metric(b) for a, b in pairs])

    ratios = {name: {"rps": ratio(name, lambda x: x.rps),
                     "p50": ratio(name, lambda x: x.p50_ms),
                     "p99": ratio(name, lambda x: x.p99_ms),
                     "cpu": ratio(name, lambda x: x.cpu_us_per_request or 0.0)}
              for name in services}
    med = medians(runs)
    svc, noa, ceil = med["service"], med["no-audit"], med["ceiling"]
    rows = [
        Row("1a L1-hit throughput, service vs ceiling",
            f"{svc['rps']:,.0f} vs {ceil['rps']:,.0f} req/s",
            f">= {TARGET_RPS_RATIO:.2f}x", f"{ratios['service']['rps']:.2f}x",
            verdict(ratios["service"]["rps"] >= TARGET_RPS_RATIO)),
        Row("1b L1-hit p50, service vs ceiling",
            f"{svc['p50_ms']:.2f} vs {ceil['p50_ms']:.2f} ms",
            f"<= {TARGET_P50_RATIO:.2f}x", f"{ratios['service']['p50']:.2f}x",
            verdict(ratios["service"]["p50"] <= TARGET_P50_RATIO)),
        Row("1c L1-hit p99, service vs ceiling",
            f"{svc['p99_ms']:.2f} vs {ceil['p99_ms']:.2f} ms",
            "-", f"{ratios['service']['p99']:.2f}x", "info"),
        Row("1d server CPU per L1 hit, service vs ceiling",
            f"{svc['cpu_us']:.0f} vs {ceil['cpu_us']:.0f} us",
            "-", f"{ratios['service']['cpu']:.2f}x", "info"),
        Row("1e same, L1_AUDIT_SAMPLE_RATE=0: req/s, p50",
            f"{noa['rps']:,.0f} req/s, {noa['p50_ms']:.2f} ms",
            "(diagnosis)", f"{ratios['no-audit']['rps']:.2f}x, {ratios['no-audit']['p50']:.2f}x",
            "info"),
        Row("1f same, L1_AUDIT_SAMPLE_RATE=0: CPU per hit",
            f"{noa['cpu_us']:.0f} us", "(diagnosis)", f"{ratios['no-audit']['cpu']:.2f}x",
            "info"),
    ]
    data = {
        "flags": {"shadow": 0, "l2": 1, "l1_percent": 100},
        "variants": {"service": "python -m app, defaults (L1_AUDIT_SAMPLE_RATE=0.01, "
                                "L1_AUDIT_MAX_PER_SECOND=5, QUERY_FAST_PATH=true)",
                     "no-audit": "python -m app, L1_AUDIT_SAMPLE_RATE=0",
                     "ceiling": "bench/ceiling_app.py"},
        "wrk": {"threads": 1, "connections": plan.connections, "seconds": plan.seconds,
                "rounds": plan.rounds},
        "l1_entry_bytes": entry_bytes,
        "response_bytes": {"service": len(hit.content), "ceiling": len(ceiling_response.content)},
        "medians": med,
        "ratios_to_ceiling": ratios,
        "runs": {name: [asdict(x) for x in rs] for name, rs in runs.items()},
        "checks": checks,
    }
    return rows, data
