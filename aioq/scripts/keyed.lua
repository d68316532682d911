-- Flow control by key (docs/flow-control.md; key layout in keys.py). A job whose record
-- holds `keyed`, "<concurrency> <rate n> <rate period ms> <key>" (its task's limits, 0 for
-- none, and its concurrency key; one field, so a job without one costs the hot path's reads
-- one missing field each) belongs to the group g = key_group(task, keyed); key_parse
-- (helpers.lua) reads the group and the limits in one match, once per job on the hot paths. A
-- group has `cap` places: its concurrency, or for a group limited by rate only, its rate's n.
-- A job of the group is on its stream only while it holds a place (it is in the list
-- keyrun:<g>); the others wait in the list keywait:<g>, in no stream, so they hold no worker
-- slot, spend no attempt, and cost a fetch nothing. In both lists a job is
-- "<priority>:<places>:<job id>" (key_member: the stream its place sends it to, and its own
-- number of places), and a waiting job's record says "queued", nothing more: a job passes from
-- one list to the other with one LMOVE, reading and writing nothing of its record. A place is
-- held from the job's entry going onto its stream until the job ends (finish.lua), or waits
-- for a retry's backoff (complete.lua); in a group without a concurrency limit, only until it
-- starts. A rate limit that sends a job back for a moment (start.lua) leaves it its place.
--
-- Hence the guarantees: at most `concurrency` jobs of a key run at once, since only holders of
-- a place are ever on a stream; every script that frees a place gives it to the next waiting
-- job in the same call (key_take: its entry is on the stream when the script returns, and a
-- parked worker's XREADGROUP wakes on it), so a key with room never waits for a poll; and the
-- streams never hold more than `cap` entries of one key, so a key that enqueues its first job
-- waits behind at most the places of the other keys (and the unkeyed jobs before it), never
-- behind another key's backlog: the fairness bound of docs/flow-control.md.
--
-- A worker killed while running a key's jobs: their records still say "running" and their
-- entries stay pending for the dead consumer, so the jobs keep their places until their leases
-- lapse and another worker's reclaim runs them again (start.lua), and give them back when that
-- run ends. No place is ever freed while a copy of its job may still run, and none stays held
-- after the job ended: every path that ends a job goes through finish(). What could leave a
-- place held by nothing (a record deleted under a waiting key by another program, or by purge
-- between two scripts) is caught by checking places against the records (key_check): every
-- key with jobs waiting is swept by PROMOTE every KEY_CHECK_MS, so such a place comes back
-- within that.
--
-- When a key's limits change (a deploy), each job goes by the number of places it was
-- enqueued with: it takes a place only while fewer than that are held, so the key moves to
-- the new limit as its jobs enqueued before the change end.
--#include queue
-- Whether the queue has ever had a keyed job: the enqueue script marks its KEYLIMITS hash (the
-- field "", no task's name) with the first one, and the marker stays. Until then the worker's
-- hot reads (start, complete, promote) leave the `keyed` field out: a field a record lacks
-- costs a scan of the whole record, per job, which would slow every queue down for a feature
-- it does not use. Read once per script call: keys_used(). `with_keyed(fields)`: a field
-- list to read, `keyed` last when the queue may hold keyed jobs. (Were the hash deleted by
-- hand, the sweep below marks it again as soon as a key has jobs waiting.)
local keys_seen = nil
local function keys_used()
  if keys_seen == nil then keys_seen = redis.call('EXISTS', KEYLIMITS) == 1 end
  return keys_seen
end

local function with_keyed(fields)
  if keys_used() then fields[#fields + 1] = 'keyed' end
  return fields
end

-- The functions below are made on first use, once per script call: a script makes every
-- function it defines each time it runs, and these would cost every call of the worker's
-- scripts (most of which see no keyed job) the time to make them. keyed() returns them:
-- cap, limits, member, unmember, enter, release, declared, sweep.
local KEYED_FNS = nil
local function keyed()
  if KEYED_FNS then return KEYED_FNS end
  -- A key's number of places: its concurrency or, limited by rate only, its rate's n.
  local function key_cap(c, n)
    if c > 0 then return c end
    if n > 0 then return n end
    return 1
  end

  -- Limits "<concurrency> <rate n> <rate period ms>[ <key>]" as numbers (0: no such limit).
  local function key_limits(spec)
    local c, n, p = string.match(spec or '', '^(%d+) (%d+) (%d+)')
    if not c then return 1, 0, 0 end                   -- not aioq's: one at a time, the safe side
    return tonumber(c), tonumber(n), tonumber(p)
  end

  -- A job in its key's lists: "<priority>:<places>:<job id>".
  local function key_member(jid, level, cap)
    return level .. ':' .. cap .. ':' .. jid
  end

  local function key_unmember(m)
    local level, cap, jid = string.match(m, '^(%d):(%d+):(.*)$')
    if not level then return 0, 1, m end
    return tonumber(level), tonumber(cap), jid
  end

  local KEYRUNP, KEYWAITP = TAG .. '{{KEY_KEYRUN}}', TAG .. '{{KEY_KEYWAIT}}'
  local KEYRATEP, KEYRATEWP = TAG .. '{{KEY_KEYRATE}}', TAG .. '{{KEY_KEYRATEWAIT}}'
  local KEY_CHECK_MS = {{KEY_CHECK_MS}}

  -- Whether a job of group g that has a place still holds it, by its record: queued on a stream
  -- (a job with a place is never in the waiting list too: key_enter), running (also on a dead
  -- worker, until it is reclaimed and ends), or sent back for a moment by a rate limit. (A job
  -- cancelled while it waited and given a place since does not: the start script, dropping its
  -- entry, would give the place back too, and finds it given back already.)
  local function key_holds(jid, g)
    local v = redis.pcall('HMGET', JOBP .. jid, 'status', 'wait', 'task', 'keyed')
    if v.err or key_group(v[3], v[4]) ~= g then return false end
    if v[1] == 'running' or v[1] == 'queued' then return true end
    return v[1] == 'scheduled' and (v[2] == 'rate limit' or v[2] == 'key rate limit')
  end

  -- Check g's places (the first 100) against their records, dropping those no job holds; returns
  -- how many are held. The sweep's, every KEY_CHECK_MS for each key with jobs waiting.
  local function key_check(g)
    local run = KEYRUNP .. g
    for _, m in ipairs(redis.call('LRANGE', run, 0, 99)) do
      local _, _, jid = key_unmember(m)
      if not key_holds(jid, g) then redis.call('LREM', run, 1, m) end
    end
    return redis.call('LLEN', run)
  end

  -- Move g's oldest waiting job to its places (LMOVE: one command takes it from one list to the
  -- other) and its entry onto its stream, if its own number of places (the one it was enqueued
  -- with) allows with `held` places taken before it (nil: it takes a place given up just now,
  -- and only a change of the key's limits since could make that too many: then counted);
  -- returns 1 when it did, 0 when it went back to the front of the line or none waits.
  local function key_take(g, held, cap_freed)
    local run = KEYRUNP .. g
    local m = redis.call('LMOVE', KEYWAITP .. g, run, 'LEFT', 'RIGHT')
    if not m then
      redis.call('ZREM', KEYED, g)
      return 0
    end
    local level, cap, jid = key_unmember(m)
    if held or cap ~= cap_freed then
      if (held or redis.call('LLEN', run) - 1) >= cap then
        redis.call('LMOVE', run, KEYWAITP .. g, 'RIGHT', 'LEFT')           -- not yet: back
        return 0
      end
    end
    redis.call('XADD', STREAMS[level], '*', 'id', jid)
    return 1
  end

  -- A job of g that may run now (enqueued, promoted, retried, requeued, a workflow step
  -- started): onto its stream if it holds a place or one is free, else it waits in its key's
  -- list. Returns true when it went onto its stream, false when it waits. `fresh`: a job just
  -- enqueued, which holds no place (and has no record yet: it is written after this).
  local function key_enter(jid, level, g, cap, now, fresh)
    local run, m = KEYRUNP .. g, key_member(jid, level, cap)
    if fresh or not redis.call('LPOS', run, m) then     -- it holds no place (yet)
      if redis.call('LLEN', run) >= cap then
        if redis.call('RPUSH', KEYWAITP .. g, m) == 1 then
          redis.call('ZADD', KEYED, 'NX', now + KEY_CHECK_MS, g)
        end
        return false
      end
      redis.call('RPUSH', run, m)
    end
    redis.call('XADD', STREAMS[level], '*', 'id', jid)
    return true
  end

  -- A job gives its place back (it ended, or waits for a retry's backoff, or, in a group limited
  -- by rate only, it started): the next waiting job of its group takes it, in this same call.
  -- `level` and `cap`: the job's priority and its number of places (its entry in the lists).
  local function key_release(jid, level, g, cap, now)
    if redis.call('LREM', KEYRUNP .. g, 1, key_member(jid, level, cap)) == 1 then
      key_take(g, nil, cap)
    end
  end

  -- The key limits the workers' code declares for `task` (written at their start, as the task
  -- rate limits are), for a job whose producer knows the task by name only; none declared: one
  -- at a time.
  local function key_declared(task)
    return redis.call('HGET', KEYLIMITS, task) or '1 0 0'
  end

  -- Sweep up to `limit` keys with jobs waiting whose sweep is due: check their places against
  -- the records and give what that frees to the jobs waiting (see the top). Returns how many
  -- jobs it put on their streams.
  local function key_sweep(now, limit)
    local given = 0
    local due = redis.call('ZRANGEBYSCORE', KEYED, '-inf', now, 'LIMIT', 0, limit)
    if #due > 0 then redis.call('HSETNX', KEYLIMITS, '', '1') end         -- with_keyed's marker
    for _, g in ipairs(due) do
      local held = key_check(g)
      for _ = 1, 1000 do                       -- bounded: a sweep is no place for a long loop
        local took = key_take(g, held)
        if took == 0 then break end
        given, held = given + 1, held + 1
      end
      if redis.call('EXISTS', KEYWAITP .. g) == 1 then
        redis.call('ZADD', KEYED, now + KEY_CHECK_MS, g)
      else
        redis.call('ZREM', KEYED, g)
      end
    end
    return given
  end

  KEYED_FNS = {cap = key_cap, limits = key_limits, member = key_member, unmember = key_unmember,
               enter = key_enter, release = key_release, declared = key_declared,
               sweep = key_sweep}
  return KEYED_FNS
end
