-- Every job this consumer holds in Redis, for a worker that lost a reply (a connection error
-- after FETCH, START_NEW or RECLAIM was sent: those are never resent, since running them twice
-- would start more jobs and strand the first batch until its lease lapsed). Entries pending for
-- this consumer that were delivered but not started (a blocking read whose START_NEW never
-- ran) are started; the rest are returned as held rows, attempt unchanged. Running it again
-- returns the same jobs, so it is safe to resend. The worker runs the rows it does not run yet.
--#include start
local now = now_ms()
local out = {}
for p = PRIORITIES - 1, 0, -1 do
  if p == 0 or level_len(p) > 0 then
    use_level(p)
    local fresh = {}
    each_pending('-', function(eid, e, jid)
      local h = jid and held_row(eid, jid)
      if h then out[#out + 1] = h else fresh[#fresh + 1] = e or {eid, false} end
    end)
    start(fresh, now, out)
  end
end
return noted(out)
