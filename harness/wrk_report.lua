-- Loaded by wrk with -s. Prints one line, "WRK_JSON {...}", that harness/wrk.py parses.
-- Latencies are in microseconds, as wrk keeps them; the harness converts to milliseconds.

done = function(summary, latency, requests)
  local function p(q)
    if summary.requests == 0 then return 0 end
    return latency:percentile(q)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f}, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    p(50), p(90), p(99), p(99.9), latency.max, latency.mean,
    e.connect, e.read, e.write, e.timeout, e.status))
end
