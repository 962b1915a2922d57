-- wrk: every request POSTs the same JSON body (BENCH_BODY), so every request asks the same
-- question: after one warm-up miss, every request is an L1 hit.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_BODY")
