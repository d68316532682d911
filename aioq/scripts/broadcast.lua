-- Broadcast copies (broadcast.py): a copy's record names the worker it is for (`for`). A
-- worker that reads the entry of a copy for another worker hands it over rather than start
-- it: XCLAIM moves the entry into that worker's pending list (its lease begins now), the record
-- is marked started by that worker, and the entry goes into the worker's `handed` set, with a
-- message on the channel of the same name; that worker takes it from there (take.lua) and runs
-- it. A copy that is running when another worker reads its entry was taken over after its
-- lease lapsed: the worker it is for died or stopped before it finished. It is for that worker
-- alone, so no one else runs it: it fails (exc_type WorkerLost). Needs `start.lua`'s locals.
local function hand_over_copy(eid, jid, target, status, d, a, now)
  if status == 'running' then
    finish(jid, 'failed', now, 'error', 'broadcast copy for worker ' .. target ..
           ' did not finish: its lease lapsed (the worker died or stopped)',
           'exc_type', 'WorkerLost')
    drop(eid)
    return
  end
  redis.call('XCLAIM', STREAM, GROUP, target, 0, eid, 'JUSTID')
  redis.call('HSET', JOBP .. jid, 'status', 'running', 'started_at', now, 'worker', target,
             'deliveries', d + 1, 'attempts', a + 1)
  local handed = TAG .. '{{KEY_HANDED}}' .. target
  redis.call('SADD', handed, LEVEL .. ' ' .. eid .. ' ' .. jid)
  redis.call('EXPIRE', handed, {{HANDED_TTL}})
  redis.call('PUBLISH', handed, jid)
end
