"""Part 5: L1 hits through the whole service on a Redis Cluster (3 masters + 3 replicas,
REDIS_CLUSTER=true) against the same service on one Redis, at equal client concurrency
(issue 14)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

from redis.cluster import RedisCluster as SyncRedisCluster

from app import contract
from bench.service_bench.l1_hit import CPU, P50, RPS, Metric
from bench.service_bench.plan import BENCH, QUESTION
from bench.service_bench.report import Row, say, verdict
from bench.service_bench.rig import Rig, start_service
from bench.service_bench.rounds import medians, ratio_text, rotate, spread
from bench.service_bench.wrk import WrkResult, run_wrk
from devstack.services import redis_cluster as cluster_svc

TARGET_CLUSTER_RPS = 0.9  # issue 14: cluster >= 0.9 x one Redis, equal concurrency


def part5_cluster_hits(rig: Rig, stack: ExitStack) -> tuple[list[Row], dict[str, Any]]:
    plan = rig.plan
    cluster = cluster_svc.start_private_cluster(name="bench-redis-cluster")
    stack.callback(cluster_svc.stop, cluster)
    flags = SyncRedisCluster.from_url(cluster.url)
    stack.callback(flags.close)
    flags.hset(contract.LOCAL_FLAGS_KEY, mapping={  # the l1-100 stage, as in part 1
        contract.LOCAL_FIELD_SHADOW: 0, contract.LOCAL_FIELD_L2: 1,
        contract.LOCAL_FIELD_L1_PERCENT: 100})
    on_cluster = start_service(stack, "service-cluster",
                               {**rig.service_env, "REDIS_URL": cluster.url,
                                "REDIS_CLUSTER": "true"}, rig.tmp, 1)
    servers = {"single": rig.service, "cluster": on_cluster}
    say(f"\n[5] L1 hit on a Redis Cluster (3 masters + 3 replicas, {cluster.url}) vs one "
        f"Redis, the same service: wrk -t1 -c{plan.connections} -d{plan.seconds}s x "
        f"{plan.rounds} rounds, ABBA")
    rig.set_flags(shadow=False, l2=True, l1_percent=100)
    for server in servers.values():
        rig.wait_for_cache_status(lambda: QUESTION, lambda s: s.endswith("ai-l1; hit"),
                                  f"an L1 hit ({server.name})", base=server.url)
    env = {"BENCH_BODY": json.dumps({"query": QUESTION, "client_id": str(rig.client)}),
           "BENCH_AUTH": rig.auth["Authorization"]}
    script = BENCH / "post_query.lua"
    for server in servers.values():  # warm-up, not recorded
        run_wrk(server.url + rig.query_path, script, env, seconds=plan.warmup_seconds,
                connections=plan.connections)
    runs: dict[str, list[WrkResult]] = {name: [] for name in servers}
    for r in range(plan.rounds):
        for name in rotate(r, list(servers)):
            result = run_wrk(servers[name].url + rig.query_path, script, env,
                             seconds=plan.seconds, connections=plan.connections,
                             pid=servers[name].pid)
            runs[name].append(result)
            say(f"    round {r + 1} {name:8s} {result.rps:7.0f} req/s  p50 "
                f"{result.p50_ms:6.2f} ms  CPU {result.cpu_us_per_request or 0:5.0f} us/req")
    hit = rig.ask(on_cluster.url, QUESTION).headers.get("Cache-Status", "")
    say(f"    check: the cluster service still answers from L1 ({hit!r})")

    def ratios(metric: Metric) -> list[float]:
        return [metric(a) / metric(b)
                for a, b in zip(runs["cluster"], runs["single"], strict=True)]

    rps = ratios(RPS)
    med = medians(runs)
    rows = [
        Row("5a L1-hit throughput, cluster vs one Redis",
            f"{med['cluster']['rps']:,.0f} vs {med['single']['rps']:,.0f} req/s",
            f">= {TARGET_CLUSTER_RPS:.1f}x", ratio_text(rps),
            verdict(spread(rps)[0] >= TARGET_CLUSTER_RPS)),
        Row("5b L1-hit p50, cluster vs one Redis",
            f"{med['cluster']['p50_ms']:.2f} vs {med['single']['p50_ms']:.2f} ms", "-",
            ratio_text(ratios(P50)), "info"),
        Row("5c server CPU per L1 hit, cluster vs one Redis",
            f"{med['cluster']['cpu_us']:.0f} vs {med['single']['cpu_us']:.0f} us", "-",
            ratio_text(ratios(CPU)), "info"),
    ]
    data = {"medians": med, "per_round_rps_ratios": rps,
            "runs": {name: [asdict(x) for x in rs] for name, rs in runs.items()}}
    return rows, data
