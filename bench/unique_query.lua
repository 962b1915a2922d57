-- wrk: every request asks a question never asked before (run id, thread id, counter), so
-- every request misses both cache layers. BENCH_RUN must differ between wrk runs. BENCH_AUTH
-- is the Authorization header (a bearer JWT).
local run = os.getenv("BENCH_RUN") or "0"
local client = os.getenv("BENCH_CLIENT")
local headers = { ["Content-Type"] = "application/json",
                  ["Authorization"] = os.getenv("BENCH_AUTH") }
local threads = 0
local n = 0
tid = tid or 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function request()
  n = n + 1
  local body = string.format(
    '{"query":"How has the patient slept since starting sertraline, case %s %d %d?",'
      .. '"client_id":"%s"}',
    run, tid, n, client)
  return wrk.format("POST", nil, headers, body)
end
