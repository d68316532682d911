-- Start what a blocking XREADGROUP (of every level's stream) just delivered to this consumer:
-- per level from the highest, its pending entries after the newest id this worker had seen
-- there (ARGV[7 + level]), at most ARGV[6] in all. Pipelined right behind the blocking read on
-- the same connection, it runs the moment the read returns, so an idle worker starts a job
-- with no extra round trip; after a lost connection, a resent pair finds what the first read
-- delivered too. Entries this worker already runs (taken over by its reclaimer) are left
-- alone; entries beyond ARGV[6] (several levels written at once) are handed back: re-added at
-- the end of their stream, for any worker.
--
-- When jobs wait at one level only (an idle queue woken by a burst), it reads on there up to
-- ARGV[6], as FETCH would (fair turns need two levels): so the worker learns in the same round
-- trip whether the queue is drained, and needs no FETCH before it parks again. Returns
-- {started jobs, more}: more is 1 when jobs may still wait (the budget was filled, entries were
-- handed back, or several levels hold jobs: FETCH's turn), else 0.
--#include start
local budget = tonumber(ARGV[6])
local now = now_ms()
local out, live, more = {}, {}, 0
for p = PRIORITIES - 1, 0, -1 do
  if level_len(p) > 0 then                        -- an empty stream (most levels): one XLEN
    live[#live + 1] = p
    use_level(p)
    local entries = {}
    each_pending('(' .. ARGV[7 + p], function(eid, e, jid)
      local rec = jid and redis.pcall('HMGET', JOBP .. jid, 'status', 'worker')
      if rec and not rec.err and rec[1] == 'running' and rec[2] == CONSUMER then
        -- this worker runs it already
      elseif budget > 0 then
        entries[#entries + 1] = e or {eid, false}
        budget = budget - 1
      elseif not e then
        redis.call('XACK', STREAM, GROUP, eid)
      else
        drop(eid)
        redis.call('XADD', STREAM, '*', unpack(e[2]))
        more = 1
      end
    end)
    start(entries, now, out)
  end
end
if #live > 1 or budget <= 0 or FAULT then
  more = 1
elseif #live == 1 then
  use_level(live[1])
  local r = redis.pcall('XREADGROUP', 'GROUP', GROUP, CONSUMER, 'COUNT', budget,
                        'STREAMS', STREAM, '>')
  if type(r) == 'table' and r.err then
    more = 1                                      -- FETCH will see (and recreate a lost group)
  elseif r then
    start(r[1][2], now, out)
    if #r[1][2] >= budget then more = 1 end
  end
end
return noted({out, more})
