-- Deduplication and debounce (task.py `options(unique_for=..., debounce=..., unique_key=...)`),
-- shared by the enqueue script. A job's values from `a` (enqueue_job.lua) carry: a + 17 the
-- mode ("" none, "unique", "debounce"), a + 18 its lock, "<task>:<key>", a + 19 the window
-- (ms). The lock (keys.py `unique:`/`debounce:`) names the job holding the key:
--   unique    the key is held while that job is queued, scheduled or running, and for the
--             window after it finished (any final status). The job's `then` carries an
--             "unlock" (flow.lua) that makes the lock expire the window after its finish; the
--             check here reads the job itself, so a lock that outlived it frees nothing early.
--   debounce  the key is held while that job waits for its due time (wait "debounce"): a
--             new enqueue gives it the latest arguments and a due time one window from now.
-- Needs the queue's keys (queue.lua) and `time_ms` (enqueue_job.lua).
local DEDUP_DONE = {succeeded = true, failed = true, cancelled = true, expired = true}

local function dedup_lock(a)
  local mode = ARGV[a + 17]
  if mode == 'unique' then return TAG .. '{{KEY_UNIQUE}}' .. ARGV[a + 18] end
  return TAG .. '{{KEY_DEBOUNCE}}' .. ARGV[a + 18]
end

-- The id of the job holding the key of the job at `a`, or nil when the key is free.
local function dedup_holder(a)
  local cur = redis.pcall('GET', dedup_lock(a))
  if type(cur) ~= 'string' then return nil end           -- free (or not a string: ours)
  local v = redis.pcall('HMGET', JOBP .. cur, 'status', 'finished_at', 'wait')
  if v.err or not v[1] then return nil end               -- its job is gone
  if ARGV[a + 17] == 'unique' then
    if not DEDUP_DONE[v[1]] then return cur end
    if time_ms() - (tonumber(v[2]) or 0) < tonumber(ARGV[a + 19]) then return cur end
    return nil
  end
  if v[1] == 'scheduled' and v[3] == 'debounce' then return cur end
  return nil
end

-- The key is held by `holder`: a debounced job takes the latest arguments and waits on.
local function dedup_hit(a, holder)
  if ARGV[a + 17] == 'debounce' then
    local due = time_ms() + tonumber(ARGV[a + 19])
    redis.call('HSET', JOBP .. holder, 'args', ARGV[a + 8], 'kwargs', ARGV[a + 9])
    redis.call('ZADD', SCHEDULED, due, holder)
    redis.call('PEXPIRE', dedup_lock(a), tonumber(ARGV[a + 19]) + {{DEBOUNCE_SLACK}})
  end
  return holder
end

-- The job `jid` was written: it holds the key from now on.
local function dedup_claim(a, jid)
  if ARGV[a + 17] == 'unique' then
    redis.call('SET', dedup_lock(a), jid)
  else
    redis.call('SET', dedup_lock(a), jid, 'PX', tonumber(ARGV[a + 19]) + {{DEBOUNCE_SLACK}})
    redis.call('HSET', JOBP .. jid, 'wait', 'debounce')
  end
end
