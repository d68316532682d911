-- Move due scheduled jobs onto the stream; those past their expiry end "expired" instead.
-- KEYS: the queue's (queue.lua; a job of priority p goes to its stream p). ARGV: limit, result
-- ttl (s).
-- Returns {moved, next due ms or -1, now ms}. ZREM decides who moves a job, so several workers
-- promoting at once never duplicate one. A keyed job goes onto its stream only if it holds or
-- gets a place on its key, else it waits for one (keyed.lua); and the keys with jobs waiting
-- whose sweep is due are swept (key_sweep), so a place nothing holds comes back.
if redis.replicate_commands then redis.replicate_commands() end
local TTL = tonumber(ARGV[2])
--#include finish
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', SCHEDULED, '-inf', now, 'LIMIT', 0, ARGV[1])
local moved = 0
local FIELDS = #ids > 0 and with_keyed({'status', 'expires_at', 'priority', 'task'})
for _, jid in ipairs(ids) do
  redis.call('ZREM', SCHEDULED, jid)
  local key = JOBP .. jid
  local rec = redis.pcall('HMGET', key, unpack(FIELDS))
  if not rec.err and rec[1] == 'scheduled' then
    if rec[2] and now > (tonumber(rec[2]) or math.huge) then
      finish(jid, 'expired', now, 'error', 'not started before it expired')
    else
      redis.call('HSET', key, 'status', 'queued')
      redis.call('HDEL', key, 'wait')                    -- it waits no more
      local g, c, n = key_parse(rec[4], rec[5])
      if not g then
        redis.call('XADD', STREAMS[level_of(rec[3])], '*', 'id', jid)
        moved = moved + 1
      elseif keyed().enter(jid, level_of(rec[3]), g, keyed().cap(c, n), now) then
        moved = moved + 1                                -- else its key has no place: it waits
      end
    end
  end
end
moved = moved + keyed().sweep(now, 20)
local nxt = redis.call('ZRANGE', SCHEDULED, 0, 0, 'WITHSCORES')
return noted({moved, tonumber(nxt[2]) or -1, now})
