"""The service benchmark: five measures, each side by side in one run, reported as ratios.

    .venv/bin/python -m bench.service_bench [--quick] [--json] [--compare REF]

1. L1-hit CPU per request, throughput and p50/p99 of the real service (`python -m app`,
   flags of the `l1-100` stage, every request a hit) vs the ceiling (`bench/ceiling_app.py`:
   a bare FastAPI endpoint doing one Redis GET of a same-size payload), with one worker and
   with two (and the two-worker runs' connection split), all driven by wrk, with the
   server's CPU per request from /proc; with --compare, the service at REF as well.
2. Invalidation time (the real `Invalidator.note_changed` → `RedisCache.bump_generations`)
   with 10^3 vs 10^6 cached answers present, and a SCAN MATCH + DEL invalidation at the
   same sizes for comparison.
3. Redis `MEMORY USAGE` of one 1024-dimension L2 entry as the service writes it, and the
   cosine similarity of the decoded vector to the original.
4. Miss-path overhead: all flags on with every request a miss vs caching off.
5. L1 hits through the service on a Redis Cluster vs on one Redis.

Absolute figures drift on a shared machine, so compared variants are interleaved (ABBA
order over several rounds) and the verdicts use the median of the per-round ratios.
Everything this starts (Redis servers, the service, the ceiling) is stopped on exit, also on
Ctrl-C or SIGTERM.
"""
