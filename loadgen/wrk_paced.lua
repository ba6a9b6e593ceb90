-- wrk with a pause after each answer (the generators' comparison, harness/infra/generators.py):
-- each connection sends, waits for the answer, pauses PAUSE_MS, sends again. A closed loop.
local pause_ms = 0

function init(args)
  pause_ms = tonumber(args[1]) or 0
end

function delay()
  return pause_ms
end
