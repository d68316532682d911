-- Deduplication and debounce (task.py `options(unique_for=..., debounce=..., unique_key=...)`,
-- dedup.py), shared by the enqueue script. A job's dedup value (enqueue_job.lua) is "" (none)
-- or "<mode> <window ms> <task>:<key>"; the lock (keys.py `unique:`/`debounce:`) names the job
-- holding the key:
--   unique    the key is held while that job is queued, scheduled or running, and for the
--             window after it finished (any final status). The job's `then` carries an
--             "unlock" (flow.lua) that makes the lock expire the window after its finish; the
--             check here reads the job itself, so a lock that outlived it frees nothing early.
--   debounce  the key is held while that job waits for its due time (wait "debounce"): a
--             new enqueue gives it the latest arguments and a due time one window from now.
-- `dedup()` makes the functions on first use, so a plain enqueue creates none of them. Needs
-- the queue's keys (queue.lua) and `time_ms` (enqueue_job.lua).
local DEDUP = nil
local function dedup()
  if DEDUP then return DEDUP end
  local D = {}

  -- A job's dedup value parsed: {mode, ms, lock (the key's name)}.
  function D.of(spec)
    local mode, ms, name = string.match(spec, '^(%a+) (%d+) (.*)$')
    local prefix = '{{KEY_DEBOUNCE}}'
    if mode == 'unique' then prefix = '{{KEY_UNIQUE}}' end
    return {mode = mode, ms = tonumber(ms), lock = TAG .. prefix .. name}
  end

  -- The id of the job holding the key, or nil when it is free.
  function D.holder(d)
    local cur = redis.pcall('GET', d.lock)
    if type(cur) ~= 'string' then return nil end         -- free (or not a string: ours)
    local v = redis.pcall('HMGET', JOBP .. cur, 'status', 'finished_at', 'wait')
    if v.err or not v[1] then return nil end             -- its job is gone
    local st = v[1]
    if d.mode == 'unique' then
      if st ~= 'succeeded' and st ~= 'failed' and st ~= 'cancelled' and st ~= 'expired' then
        return cur
      end
      if time_ms() - (tonumber(v[2]) or 0) < d.ms then return cur end
      return nil
    end
    if st == 'scheduled' and v[3] == 'debounce' then return cur end
    return nil
  end

  -- The key is held by `holder`: a debounced job takes the latest arguments (the job's values
  -- from `a`) and waits on.
  function D.hit(d, holder, a)
    if d.mode == 'debounce' then
      redis.call('HSET', JOBP .. holder, 'args', ARGV[a + 8], 'kwargs', ARGV[a + 9])
      redis.call('ZADD', SCHEDULED, time_ms() + d.ms, holder)
      redis.call('PEXPIRE', d.lock, d.ms + {{DEBOUNCE_SLACK}})
    end
    return holder
  end

  -- The job `jid` was written: it holds the key from now on.
  function D.claim(d, jid)
    if d.mode == 'unique' then
      redis.call('SET', d.lock, jid)
    else
      redis.call('SET', d.lock, jid, 'PX', d.ms + {{DEBOUNCE_SLACK}})
      redis.call('HSET', JOBP .. jid, 'wait', 'debounce')
    end
  end

  DEDUP = D
  return D
end
