-- wrk: every request POSTs the same JSON body (BENCH_BODY), so every request asks the same
-- question: after one warm-up miss, every request is an L1 hit. BENCH_AUTH is the
-- Authorization header (a bearer JWT), sent with every request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
wrk.body = os.getenv("BENCH_BODY")
