-- Flow control by key (README "Flow control by key"; key layout in keys.py). A job whose record
-- holds `keyed`, "<concurrency> <rate n> <rate period ms> <key>" (its task's limits, 0 for
-- none, and its concurrency key; one field, so a job without one costs the hot path's reads
-- one missing field each) belongs to the group g = key_group(task, keyed); key_parse reads
-- the group and the limits in one match (the hot paths call it once per job), and the
-- functions below take the group's `cap`, its number of places. A group has `cap` places: its
-- concurrency, or for a group limited by rate only, its rate's n. A job of the group is on its
-- stream only while it holds a place (keyrun:<g>); the others wait in keywait:<g>, in no
-- stream, so they hold no worker slot, spend no attempt, and cost a fetch nothing. A waiting
-- job is "<priority>:<job id>" there (the stream its place sends it to) and its record says
-- "queued", nothing more, so giving it a place reads and writes nothing of its record. A place is
-- held from the job's entry going onto its stream until the job ends (finish.lua), or waits
-- for a retry's backoff (complete.lua); in a group without a concurrency limit, only until it
-- starts. A rate limit that sends a job back for a moment (start.lua) leaves it its place.
--
-- Hence the guarantees: at most `concurrency` jobs of a key run at once, since only holders of
-- a place are ever on a stream; every script that frees a place gives it to the next waiting
-- job in the same call (key_fill: its entry is on the stream when the script returns, and a
-- parked worker's XREADGROUP wakes on it), so a key with room never waits for a poll; and the
-- streams never hold more than `cap` entries of one key, so a key that enqueues its first job
-- waits behind at most the places of the other keys (and the unkeyed jobs before it), never
-- behind another key's backlog: the fairness bound of the README.
--
-- A worker killed while running a key's jobs: their records still say "running" and their
-- entries stay pending for the dead consumer, so the jobs keep their places until their leases
-- lapse and another worker's reclaim runs them again (start.lua), and give them back when that
-- run ends. No place is ever freed while a copy of its job may still run, and none stays held
-- after the job ended: every path that ends a job goes through finish(). What could leave a
-- place held by nothing (a record deleted under a waiting key by another program, or by purge
-- between two scripts) is caught by checking places against the records (key_check): places
-- are checked when a key is full and a job arrives, and every key with jobs waiting is swept by
-- PROMOTE every KEY_CHECK_MS, so such a place comes back within that.
--#include queue
--#include window
local KEYRUNP, KEYWAITP = TAG .. '{{KEY_KEYRUN}}', TAG .. '{{KEY_KEYWAIT}}'
local KEYRATEP, KEYRATEWP = TAG .. '{{KEY_KEYRATE}}', TAG .. '{{KEY_KEYRATEWAIT}}'
local KEY_CHECK_MS = {{KEY_CHECK_MS}}

-- Limits "<concurrency> <rate n> <rate period ms>[ ...]": concurrency (0: none), rate n and
-- period ms (0, 0: none).
local function key_limits(spec)
  local c, n, p = string.match(spec or '', '^(%d+) (%d+) (%d+)')
  if not c then return 1, 0, 0 end                   -- not aioq's: one at a time, the safe side
  return tonumber(c), tonumber(n), tonumber(p)
end

-- A group's places: its concurrency, or for a group limited by rate only, its rate's n.
local function key_cap(c, n)
  if c > 0 then return c end
  if n > 0 then return n end
  return 1
end

-- The group of a job of `task` whose record's `keyed` is `keyed`, and its limits: g,
-- concurrency, rate n, rate period ms; nil for a job without a key.
local function key_parse(task, keyed)
  if not keyed or not task then return nil end
  local c, n, p, key = string.match(keyed, '^(%d+) (%d+) (%d+) (.+)$')
  if not c then return nil end
  return task .. '\0' .. key, tonumber(c), tonumber(n), tonumber(p)
end

-- Whether a job of group g that has a place (keyrun) still holds it, by its record: queued on a
-- stream (a job with a place is never in the waiting list too: key_enter), running (also on a
-- dead worker, until it is reclaimed and ends), or sent back for a moment by a rate limit. (A
-- job cancelled while it waited and given a place since does not: the start script, dropping
-- its entry, would give the place back too, and finds it given back already.)
local function key_holds(jid, g)
  local v = redis.pcall('HMGET', JOBP .. jid, 'status', 'wait', 'task', 'keyed')
  if v.err or key_group(v[3], v[4]) ~= g then return false end
  if v[1] == 'running' or v[1] == 'queued' then return true end
  return v[1] == 'scheduled' and (v[2] == 'rate limit' or v[2] == 'key rate limit')
end

-- Check the places of g that are due for it against their records, dropping those no job
-- holds (each place is checked at most once per KEY_CHECK_MS); returns how many are held
-- (`held`: as many as before the check, when the caller knows).
local function key_check(g, now, held)
  local run = KEYRUNP .. g
  local due = redis.call('ZRANGEBYSCORE', run, '-inf', now, 'LIMIT', 0, 100)
  if held and #due == 0 then return held end                   -- the usual case
  for _, jid in ipairs(due) do
    if key_holds(jid, g) then
      redis.call('ZADD', run, now + KEY_CHECK_MS, jid)
    else
      redis.call('ZREM', run, jid)
    end
  end
  return redis.call('ZCARD', run)
end

-- Give the job a place: its entry goes onto the stream of its priority.
local function key_admit(jid, level, g, now)
  redis.call('ZADD', KEYRUNP .. g, now + KEY_CHECK_MS, jid)
  redis.call('XADD', STREAMS[level], '*', 'id', jid)
end

-- Give g's free places to its waiting jobs, oldest first (`held`: the places held, when the
-- caller knows); returns how many it gave. A job cancelled while it waited is not looked for
-- in its list (that would cost a scan of it): it gets its place like the others, and the start
-- script drops its entry and passes the place on (start.lua); CANCEL keeps its record until
-- then (cancel.lua).
local function key_fill(g, cap, now, held)
  local room = cap - (held or redis.call('ZCARD', KEYRUNP .. g))
  local wait, given = KEYWAITP .. g, 0
  while given < room do
    local m = redis.call('LPOP', wait)
    if not m then
      redis.call('ZREM', KEYED, g)
      break
    end
    key_admit(string.sub(m, 3), tonumber(string.sub(m, 1, 1)) or 0, g, now)
    given = given + 1
  end
  return given
end

-- A job of g that may run now (enqueued, promoted, retried, requeued, a workflow step
-- started): onto its stream if it holds a place or one is free, else it waits in its key's
-- list. Returns true when it went onto its stream, false when it waits. `fresh`: a job just
-- enqueued, which holds no place (and has no record yet: it is written after this).
local function key_enter(jid, level, g, cap, now, fresh)
  if not fresh and redis.call('ZSCORE', KEYRUNP .. g, jid) then
    redis.call('XADD', STREAMS[level], '*', 'id', jid)
    return true
  end
  local held = redis.call('ZCARD', KEYRUNP .. g)
  if held >= cap then
    held = key_check(g, now, held)
    -- a place the check freed goes to the jobs that waited for it first (a key with a free
    -- place and jobs waiting happens only then: every other path fills what it frees)
    if held < cap then
      key_fill(g, cap, now, held)
      held = redis.call('ZCARD', KEYRUNP .. g)
    end
  end
  if held < cap then
    key_admit(jid, level, g, now)
    return true
  end
  if redis.call('RPUSH', KEYWAITP .. g, level .. ':' .. jid) == 1 then
    redis.call('ZADD', KEYED, 'NX', now + KEY_CHECK_MS, g)
  end
  return false
end

-- A job gives its place back (it ended, or waits for a retry's backoff, or, in a group limited
-- by rate only, it started): the next waiting job of its group takes it, in this same call.
local function key_release(jid, g, cap, now)
  if redis.call('ZREM', KEYRUNP .. g, jid) == 1 then key_fill(g, cap, now) end
end

-- Whether the queue has ever had a keyed job: the enqueue script marks its KEYLIMITS hash (the
-- field "", no task's name) with the first one, and the marker stays. Until then the worker's
-- hot reads (start, complete, promote) leave the `keyed` field out: a field a record lacks
-- costs a scan of the whole record, per job, which would slow every queue down for a feature
-- it does not use. Read once per script call. `with_keyed(fields)`: the field list to read,
-- `keyed` last when the queue may hold keyed jobs. (Were the hash deleted by hand, the sweep
-- below marks it again as soon as a key has jobs waiting.)
local keys_seen = nil
local function with_keyed(fields)
  if keys_seen == nil then keys_seen = redis.call('EXISTS', KEYLIMITS) == 1 end
  if keys_seen then fields[#fields + 1] = 'keyed' end
  return fields
end

-- The key limits the workers' code declares for `task` (written at their start, as the task
-- rate limits are), for a job whose producer knows the task by name only; none declared: one
-- at a time.
local function key_declared(task)
  return redis.call('HGET', KEYLIMITS, task) or '1 0 0'
end

-- Sweep up to `limit` keys with jobs waiting whose sweep is due: check their places against
-- the records and fill what that frees (see the top). Their limits are read from a job that
-- waits (or holds a place): every job of a group carries them. Returns how many jobs it put
-- on their streams.
local function key_sweep(now, limit)
  local given = 0
  local due = redis.call('ZRANGEBYSCORE', KEYED, '-inf', now, 'LIMIT', 0, limit)
  if #due > 0 then redis.call('HSETNX', KEYLIMITS, '', '1') end         -- with_keyed's marker
  for _, g in ipairs(due) do
    local wait = KEYWAITP .. g
    local spec = nil
    local head = redis.call('LINDEX', wait, 0)
    local holder = redis.call('ZRANGE', KEYRUNP .. g, 0, 0)[1]
    for _, jid in ipairs({head and string.sub(head, 3), holder}) do
      local s = jid and redis.pcall('HGET', JOBP .. jid, 'keyed')
      if not spec and type(s) == 'string' then spec = s end
    end
    local c, n = key_limits(spec)
    given = given + key_fill(g, key_cap(c, n), now, key_check(g, now))
    if redis.call('EXISTS', wait) == 1 then
      redis.call('ZADD', KEYED, now + KEY_CHECK_MS, g)
    else
      redis.call('ZREM', KEYED, g)
    end
  end
  return given
end
