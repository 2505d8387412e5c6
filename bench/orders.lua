-- wrk script: POST /v1/orders with a fresh Idempotency-Key per request,
-- printing orders/s and latency percentiles.
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  key = os.getenv("PW_KEY")
  body = os.getenv("PW_BODY")
  prefix = string.format("bench-%d-%d-%d-", os.time(), id, math.random(1, 1000000000))
  counter = 0
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/v1/orders", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
    ["Idempotency-Key"] = prefix .. counter,
  }, body)
end

function done(summary, latency, requests)
  -- No response() callback (it would cost wrk a Lua call per response):
  -- wrk counts non-2xx statuses itself, and orders.sh checks afterwards
  -- that every answered order is stored.
  local other = summary.errors.status
  local created = summary.requests - other
  local secs = summary.duration / 1e6
  io.write(string.format("RESULT orders_per_s=%.0f created=%d non_2xx=%d socket_errors=%d p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
    created / secs, created, other,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
