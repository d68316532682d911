-- Take over entries whose lease lapsed (idle > ARGV[6] ms), at most ARGV[7], from the highest
-- priority down, scanning each level's stream from its cursor (ARGV[8 + level]). Returns
-- {next cursors by level, started jobs, held jobs}.
--
-- XAUTOCLAIM matches the caller's own idle entries too (an event loop blocked past the lease,
-- a renewal that failed). Those are never restarted here: a second copy of a running job would
-- count an attempt, and the first copy's outcome would then be fenced. They are returned as
-- held rows instead (the claim has renewed them); the worker ignores the ones it runs and runs
-- the others, whose start it never heard of (see RECOVER).
--#include start
local budget = tonumber(ARGV[7])
local now = now_ms()
local out, held, cursors = {}, {}, {}
for p = 0, PRIORITIES - 1 do cursors[p + 1] = ARGV[8 + p] end
for p = PRIORITIES - 1, 0, -1 do
  if budget > 0 then
    use_level(p)
    local r = redis.pcall('XAUTOCLAIM', STREAM, GROUP, CONSUMER, ARGV[6], cursors[p + 1],
                          'COUNT', budget)
    if type(r) == 'table' and r.err then
      if string.find(r.err, 'NOGROUP') then ensure_group() else fault(r.err) end
      cursors[p + 1] = '0-0'
    else
      cursors[p + 1] = r[1]
      budget = budget - #r[2]
      local lapsed = {}
      for _, e in ipairs(r[2]) do
        local jid = e[2] and field(e[2], 'id')
        local row = jid and held_row(e[1], jid)
        if row then held[#held + 1] = row else lapsed[#lapsed + 1] = e end
      end
      start(lapsed, now, out)
    end
  end
end
if #out == 0 and #held == 0 and FAULT then return noted(redis.error_reply(FAULT)) end
return noted({cursors, out, held})
