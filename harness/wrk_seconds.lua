-- Appended to wrk_report.lua by `make diagnose`: answers counted per second of CLOCK_MONOTONIC,
-- the clock of the harness's time.monotonic(), so that each second of a level is judged and set
-- beside the thread dumps taken in it. Prints one more line, "WRK_SECONDS {...}".
--
-- Defining response() makes wrk parse every response's headers and body for Lua: a cost the
-- diagnosis pays (it measures where a service stops, not its best throughput) and the
-- benchmarks do not.
local sec_ffi = require "ffi"
sec_ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } syncasync_timespec;
  int clock_gettime(int clk_id, syncasync_timespec *tp);
]]
local CLOCK_MONOTONIC = 1 -- Linux's number for it
local now = sec_ffi.new("syncasync_timespec")

local function second()
  sec_ffi.C.clock_gettime(CLOCK_MONOTONIC, now)
  return tonumber(now.tv_sec)
end

-- Globals of each thread's Lua state, read back through thread:get() in done().
answered_ok, answered_other = {}, {}

local threads = {}
setup = function(thread)
  threads[#threads + 1] = thread
end

response = function(status, headers, body)
  local s = second()
  if status < 400 then
    answered_ok[s] = (answered_ok[s] or 0) + 1
  else
    answered_other[s] = (answered_other[s] or 0) + 1
  end
end

local function merged(name)
  local total = {}
  for _, thread in ipairs(threads) do
    for s, n in pairs(thread:get(name) or {}) do
      total[s] = (total[s] or 0) + n
    end
  end
  local parts = {}
  for s, n in pairs(total) do
    parts[#parts + 1] = string.format('"%d": %d', s, n)
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

local report = done
done = function(summary, latency, requests)
  report(summary, latency, requests)
  io.write(string.format('WRK_SECONDS {"ok": %s, "other": %s}\n',
    merged("answered_ok"), merged("answered_other")))
end
