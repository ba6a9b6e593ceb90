-- Loaded by wrk with -s. Prints one line, "WRK_JSON {...}", that harness/infra/wrk.py parses.
-- Latencies are in microseconds, as wrk keeps them; the harness converts to milliseconds.
--
-- "histogram" is every non-zero 1 µs bucket of wrk's latency histogram as wrk hands it to
-- done(), that is after its coordinated-omission correction (the harness undoes it). wrk's Lua
-- API reads the i-th bucket by scanning from the minimum (stats_value_at), which makes reading
-- them all quadratic; so the buckets are read from wrk 4.1's stats struct (src/stats.h) through
-- LuaJIT's FFI, and checked against the API: the same count, minimum and maximum, or null.
local ok_ffi, ffi = pcall(require, "ffi")
if ok_ffi then
  ffi.cdef [[
    typedef struct {
      uint64_t count;
      uint64_t limit;
      uint64_t min;
      uint64_t max;
      uint64_t data[];
    } syncasync_wrk_stats;
  ]]
end

local function histogram(latency, requests)
  if not ok_ffi or requests == 0 then return "null" end
  local s = ffi.cast("syncasync_wrk_stats **", latency)[0]
  local count, low, high = tonumber(s.count), tonumber(s.min), tonumber(s.max)
  if count == 0 or low ~= latency.min or high ~= latency.max or high >= tonumber(s.limit) then
    return "null"
  end
  local parts, total = {}, 0
  for i = low, high do
    local c = tonumber(s.data[i])
    if c > 0 then
      parts[#parts + 1] = string.format("[%d,%d]", i, c)
      total = total + c
    end
  end
  if total ~= count then return "null" end
  return string.format('{"count": %d, "buckets": [%s]}', count, table.concat(parts, ","))
end

done = function(summary, latency, requests)
  local function p(q)
    if summary.requests == 0 then return 0 end
    return latency:percentile(q)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f}, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}, ' ..
    '"histogram": %s}\n',
    summary.requests, summary.duration, summary.bytes,
    p(50), p(90), p(99), p(99.9), latency.max, latency.mean,
    e.connect, e.read, e.write, e.timeout, e.status,
    histogram(latency, summary.requests)))
end
