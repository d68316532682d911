-- Finish a batch of jobs of one stream. KEYS: the queue's (queue.lua). ARGV 1-5 as `start`'s,
-- 6 the priority of the stream, then records of 8 values: op, entry id, job id, attempt, a, b, c, d. A record is applied only while the job
-- record says this consumer runs the current attempt (fencing): whoever takes an entry over
-- (reclaim) or finishes it rewrites `worker`, `attempts` or `status` in the same script, so a
-- worker frozen past its lease writes nothing over the new owner's work. Returns the fenced ids.
--   ok       a = result JSON
--   fail     a = error, b = exc_type, c = traceback
--   retry    a, b, c as fail, kept in the record's `history` (history.lua); d = delay ms (0:
--            back on the stream now)
--   dead     a = reason: the job fails and the raw entry goes to the dead-letter stream
--   cancelled  the running coroutine was cancelled by job.cancel()
-- A job flagged by job.cancel() ends "cancelled" whatever the record says. Entries are
-- acknowledged and deleted with one XACK and one XDEL for the whole batch. A finished job of a
-- workflow (its record has `then`) goes into the hand-over outbox (finish.lua); its successors
-- on this queue are told here, in the same script (tell.lua: a chain's next step starts, a
-- group's join counts the member), and those on other queues are returned for the worker to
-- tell there (handover.py): returns {fenced ids, hand-overs}, each {job id, status, the
-- successors elsewhere, payload} as handover.lua's.
-- A keyed job that ends, or waits for its retry's backoff, gives its key's place to the next
-- job waiting on that key in this call (keyed.lua); one retried at once keeps it.
--#include start
--#include history
--#include tell
use_level(tonumber(ARGV[6]))
local now = now_ms()
local fenced, done, handed = {}, {}, {}
local read_keyed = keys_used()                   -- the `keyed` field too: keyed.lua
for i = 7, #ARGV, 8 do
  local op, eid, jid, att = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = JOBP .. jid
  -- pcall: a foreign key of another type is not ours to write
  local rec
  if read_keyed then
    rec = redis.pcall('HMGET', key, 'attempts', 'worker', 'status', 'cancel', 'error', 'then',
                      'task', 'keyed')
  else
    rec = redis.pcall('HMGET', key, 'attempts', 'worker', 'status', 'cancel', 'error', 'then',
                      'task')
  end
  if not rec.err and rec[1] == att and rec[2] == CONSUMER and rec[3] ~= 'running' then
    -- this very outcome, written by a first send of this batch whose reply was lost: no one
    -- else writes a record that still names this consumer and attempt but is not running
    done[#done + 1] = eid
  elseif rec.err or rec[1] ~= att or rec[2] ~= CONSUMER or rec[3] ~= 'running' then
    fenced[#fenced + 1] = jid
  else
    if rec[4] then op = 'cancelled' end        -- job.cancel() won the race with the outcome
    local final = op ~= 'retry'
    local g, c, n = key_parse(rec[7], rec[8])
    local cap = g and keyed().cap(c, n)
    if final then
      THEN_KNOWN = rec[6] ~= false
      KEY_KNOWN = g and {g, cap, LEVEL} or false
    end
    if op == 'ok' then
      -- a record written before failures went to `history` may still hold one
      if rec[5] then redis.call('HDEL', key, 'error', 'exc_type', 'traceback') end
      finish(jid, 'succeeded', now, 'result', ARGV[i + 4])
    elseif op == 'cancelled' then
      finish(jid, 'cancelled', now)
    elseif op == 'fail' then
      finish(jid, 'failed', now, 'error', ARGV[i + 4], 'exc_type', ARGV[i + 5],
             'traceback', ARGV[i + 6])
    elseif op == 'dead' then
      local e = redis.call('XRANGE', STREAM, eid, eid)
      bury(eid, jid, ARGV[i + 4], (e[1] and e[1][2]) or {}, now)
      finish(jid, 'failed', now, 'error', ARGV[i + 4], 'exc_type', ARGV[i + 5])
    elseif op == 'retry' then
      local delay = tonumber(ARGV[i + 7])
      local status = 'queued'
      if delay > 0 then status = 'scheduled' end
      -- the failure is history, not the job's error: a later attempt may still succeed
      remember(key, att, ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], now)
      if rec[5] then redis.call('HDEL', key, 'error', 'exc_type', 'traceback') end
      redis.call('HSET', key, 'status', status, 'deliveries', 0)
      if delay > 0 then
        redis.call('HSET', key, 'wait', 'retry')            -- why it waits (its backoff)
        redis.call('ZADD', SCHEDULED, now + delay, jid)
        if g then keyed().release(jid, LEVEL, g, cap, now) end
      elseif g then
        keyed().enter(jid, LEVEL, g, cap, now)             -- or it waits for a place
      else
        redis.call('XADD', STREAM, '*', 'id', jid)
      end
    end
    if final and rec[6] then
      local status, payload = 'succeeded', ARGV[i + 4]
      if op == 'cancelled' then
        status, payload = 'cancelled', ''
      elseif op ~= 'ok' then
        status, payload = 'failed', failure(jid, rec[7], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6])
      end
      pass_on({jid, status, rec[6], payload}, now, handed)
    end
    done[#done + 1] = eid
  end
end
if #done > 0 then
  -- pcall: after a Redis restart without data the stream and group may be gone
  redis.pcall('XACK', STREAM, GROUP, unpack(done))
  redis.pcall('XDEL', STREAM, unpack(done))
end
return noted({fenced, handed})
