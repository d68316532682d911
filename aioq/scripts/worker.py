"""The Lua of the worker's path: ``_PRELUDE`` (shared helpers and ``start``, which turns
delivered stream entries into started jobs), FETCH and START_NEW (read and start new jobs,
highest priority first, with FAIR turns for the lower ones), RECLAIM (take over lapsed
leases), COMPLETE (write outcomes, fenced), RENEW (leases), RELEASE_ALL (shutdown), PROMOTE
(due scheduled jobs), and CANCEL (what ``job.cancel()`` runs; a running job is flagged for its
worker).

The worker's hot path is two calls per *batch*, never per job: ``fetch`` (read up to the free
slots and mark them running) and ``complete`` (write results, XACK, XDEL, publish).
"""

from __future__ import annotations

from ..keys import PRIORITIES
from .helpers import _HELPERS

# Shared Lua: helpers, and `start`, which turns delivered stream entries into started jobs.
# ARGV for every script using `start`: 1 group, 2 consumer, 3 max deliveries, 4 result ttl (s),
# 5 dead-letter stream length cap; KEYS: 1 stream, 2 dead-letter stream. A queue has one stream
# per priority (keys.py); scripts reading several set the one they work on with `use_level`.
_PRELUDE = (
    _HELPERS
    + r"""
if redis.replicate_commands then redis.replicate_commands() end
local STREAM, DEAD = KEYS[1], KEYS[2]
local GROUP, CONSUMER = ARGV[1], ARGV[2]
local MAX_DELIVERIES, TTL, DEAD_MAX = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local TAG = string.match(STREAM, '^(.*}:)')              -- "aioq:{app:queue}:"
local PRIORITIES = __PRIORITIES__
local LEVEL = 0                                          -- the priority of STREAM

local function use_level(p)
  LEVEL = p
  STREAM = level_stream(TAG .. 'stream', p)
end
local JOBP, DONEP = TAG .. 'job:', TAG .. 'done:'
local FAILED = TAG .. 'failed'                          -- the failed-jobs index (keys.py)
local TERMINAL = {succeeded = true, failed = true, cancelled = true, expired = true}

-- Keep the raw entry (and the job record, if any) in the dead-letter stream with the reason.
local function bury(eid, jid, reason, fields, now)
  local args = {'XADD', DEAD, 'MAXLEN', '~', DEAD_MAX, '*',
                'reason', reason, 'entry', eid, 'at', now, 'fields', cjson.encode(fields)}
  if jid then
    args[#args + 1] = 'id'; args[#args + 1] = jid
    local rec = redis.pcall('HGETALL', JOBP .. jid)        -- pcall: a foreign key of any type
    if not rec.err and #rec > 0 then
      args[#args + 1] = 'job'; args[#args + 1] = cjson.encode(rec)
    end
  end
  redis.call(unpack(args))
end

-- Finish a job for good: final status, fields, expiry, and the pushed notification.
local FINISHED = {}               -- jobs this call finished, for the `recent` stream (noted)

local function finish(jid, status, now, ...)
  FINISHED[#FINISHED + 1] = jid
  local key = JOBP .. jid
  redis.call('HSET', key, 'status', status, 'finished_at', now, ...)
  if TTL > 0 then redis.call('EXPIRE', key, TTL) end
  if status == 'failed' then                 -- index failures (rare); trim what has expired
    redis.call('ZADD', FAILED, now, jid)
    if TTL > 0 then redis.call('ZREMRANGEBYSCORE', FAILED, '-inf', now - TTL * 1000) end
  end
  -- The notification carries the outcome so a waiter needs no read (job.py): "<status>
  -- <result JSON>" for succeeded, "<status> {error, exc_type, traceback}" (JSON) for the
  -- other outcomes with an error, bare "<status>" when there is nothing to carry or it is
  -- over 64 KB (the waiter reads the record then; the record stays the source of truth).
  local msg, f = status, {...}
  if status == 'succeeded' then
    for i = 1, #f, 2 do
      if f[i] == 'result' and #f[i + 1] <= 65536 then msg = status .. ' ' .. f[i + 1] end
    end
  elseif #f > 0 then
    local o = {}
    for i = 1, #f, 2 do
      if f[i] == 'error' or f[i] == 'exc_type' or f[i] == 'traceback' then o[f[i]] = f[i + 1] end
    end
    local enc = cjson.encode(o)
    if #enc <= 65536 then msg = status .. ' ' .. enc end
  end
  redis.call('PUBLISH', DONEP .. jid, msg)
end

-- A script's reply, once the jobs it finished are noted in the queue's `recent` stream (one
-- entry per call, keys.py).
local function noted(reply)
  if #FINISHED > 0 then
    redis.call('XADD', TAG .. 'recent', 'MAXLEN', '~', 100, '*', 'ids', cjson.encode(FINISHED))
  end
  return reply
end

local function drop(eid)
  redis.call('XACK', STREAM, GROUP, eid)
  redis.call('XDEL', STREAM, eid)
end

-- Global rate limits (see ratelimit.py): a sliding-window log of start times per task. The
-- queue's `ratelimits` hash holds "<limit> <period ms>" per task, and an override under
-- "<task>!" that wins. Looked up once per task per script call, and not at all when the queue
-- has no limits.
local RATES, RATEP, RATEW = TAG .. 'ratelimits', TAG .. 'rate:', TAG .. 'ratewait:'
local limits = nil
local function rate_allows(task, eid, jid, now)
  if limits == nil then
    limits = {}
    if redis.call('EXISTS', RATES) == 0 then limits = false end
  end
  if not limits or not task then return true end
  local lim = limits[task]
  if lim == nil then
    local conf = redis.call('HMGET', RATES, task .. '!', task)
    local spec = conf[1] or conf[2]
    lim = false
    if spec and spec ~= '' then
      local n, p = string.match(spec, '^(%d+) (%d+)$')
      if n then lim = {tonumber(n), tonumber(p)} end
    end
    limits[task] = lim
  end
  if not lim then return true end
  local key = RATEP .. task
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - lim[2])
  local used = redis.call('ZCARD', key)
  if used < lim[1] then
    redis.call('ZADD', key, now, LEVEL .. ':' .. eid)     -- entry ids repeat across levels
    redis.call('PEXPIRE', key, lim[2])
    return true
  end
  -- Not allowed now: due when a start leaves the window. Jobs turned away before and not yet
  -- due are counted in `ratewait:<task>` (job id -> due), across script calls and workers:
  -- with r of them waiting, this job waits for the r-th oldest start (one period later per
  -- full window). So a backlog comes back spread out at the rate it can start, each job about
  -- once, not all of it every period (which made Redis work grow with the backlog).
  local waiting = RATEW .. task
  redis.call('ZREMRANGEBYSCORE', waiting, '-inf', now)
  local r = redis.call('ZCARD', waiting)
  local oldest = tonumber(redis.call('ZRANGE', key, r % used, r % used, 'WITHSCORES')[2])
  local due = oldest + lim[2] * (1 + math.floor(r / used))
  redis.call('ZADD', waiting, due, jid)
  redis.call('PEXPIRE', waiting, due - now + 2 * lim[2])
  redis.call('HSET', JOBP .. jid, 'status', 'scheduled')
  redis.call('ZADD', TAG .. 'scheduled', due, jid)
  return false
end

local SKIP_MINE = false          -- set by START_NEW, which may see entries already started

-- Mark delivered entries (of STREAM) as started jobs, appended to `out`; bury what is not a
-- job or is poison. Each started job: entry id, job id, attempt, task, args, kwargs, timeout,
-- retries, priority, trace (the trace-context carrier, nil when the job has none).
local function start(entries, now, out)
  out = out or {}
  for _, e in ipairs(entries) do
    local eid, fields = e[1], e[2]
    if not fields then
      redis.call('XACK', STREAM, GROUP, eid)               -- deleted while pending
    else
      local jid, problem
      if #fields == 2 and fields[1] == 'id' and fields[2] ~= '' then
        jid = fields[2]
      else
        jid = field(fields, 'id')
        if jid == '' then jid = nil end
        local names = {}
        for i = 1, #fields, 2 do names[#names + 1] = fields[i] end
        problem = 'malformed stream entry ' .. eid .. ': expected the single field "id", got '
                  .. cjson.encode(names)
      end
      -- Foreign data must never make this script raise: an error fails the whole batch, and
      -- every later fetch or reclaim of the same entries, so the worker would stop fetching.
      -- Hence pcall where another program's keys can break a command (a key of another
      -- type), tonumber on counters, and such a job is buried like any other malformed one.
      -- One HMGET reads everything and one HSET starts the job: two commands per job.
      local v, hashed = false, false
      if jid then
        v = redis.pcall('HMGET', JOBP .. jid, 'status', 'cancel', 'deliveries', 'attempts',
                        'task', 'args', 'kwargs', 'timeout', 'retries', 'expires_at', 'worker',
                        'trace')
        if v.err then
          problem = problem or ('key ' .. JOBP .. jid .. ' is not a job record: ' .. v.err)
          v = false
        else
          hashed = true                                   -- a hash, or no key at all
        end
      end
      local status = v and v[1]
      if not problem and not status then
        problem = 'job record ' .. JOBP .. jid .. ' is missing'
      end
      local d, a
      if not problem and not TERMINAL[status] and status ~= 'scheduled' and not v[2] then
        d, a = tonumber(v[3] or 0), tonumber(v[4] or 0)
        if not d or not a then
          problem = 'job record ' .. JOBP .. jid .. ' holds a counter that is not an integer'
        end
      end
      if SKIP_MINE and status == 'running' and v[11] == CONSUMER then
        -- START_NEW: this worker started it already (e.g. reclaimed it): leave it running
      elseif problem then
        bury(eid, jid, problem, fields, now)
        if hashed and not TERMINAL[status] then              -- a missing record is created failed
          finish(jid, 'failed', now, 'error', problem, 'exc_type', 'BadJob')
        end
        drop(eid)
      elseif TERMINAL[status] or status == 'scheduled' then
        drop(eid)                                           -- cancelled while queued, or stale
      elseif v[2] then
        finish(jid, 'cancelled', now)                       -- cancelled while its worker died
        drop(eid)
      elseif v[10] and now > (tonumber(v[10]) or math.huge) then
        finish(jid, 'expired', now, 'error', 'not started before it expired')
        drop(eid)
      elseif d + 1 > MAX_DELIVERIES then
        problem = 'poison: delivered ' .. d .. ' times without finishing'
        bury(eid, jid, problem, fields, now)
        finish(jid, 'failed', now, 'error', problem, 'exc_type', 'PoisonJob',
               'deliveries', d + 1)
        drop(eid)
      elseif not rate_allows(v[5], eid, jid, now) then
        drop(eid)                          -- back in the scheduled set: no slot, no attempt spent
      else
        redis.call('HSET', JOBP .. jid, 'status', 'running', 'started_at', now,
                   'worker', CONSUMER, 'deliveries', d + 1, 'attempts', a + 1)
        out[#out + 1] = {eid, jid, a + 1, v[5], v[6], v[7], v[8], v[9], LEVEL, v[12]}
      end
    end
  end
  return out
end

local function ensure_group()
  redis.pcall('XGROUP', 'CREATE', STREAM, GROUP, '0', 'MKSTREAM')
end

-- Scripts reading several levels never raise once one job has started (Redis does not roll a
-- script back: it would be marked running and never run). A level that cannot be read (another
-- program's key of another type) is skipped; FAULT keeps why, returned as the error only when
-- nothing started, so it still surfaces.
local FAULT = nil
local function fault(err)
  FAULT = FAULT or (STREAM .. ': ' .. tostring(err))
end

-- How many entries level p's stream holds (0 when it cannot be read).
local function level_len(p)
  use_level(p)
  local n = redis.pcall('XLEN', STREAM)
  if type(n) == 'number' then return n end
  fault(n.err)
  return 0
end
""".replace("__PRIORITIES__", str(PRIORITIES))
)

# Read up to ARGV[6] new entries without blocking and start them. Returns started jobs.
#
# Priorities: the queue's streams are read from the highest priority down, so a higher one
# starts first, except that every FAIR-th job a worker starts from the queue is a fair turn,
# handed to the levels in rotation (1, 2, ..., 9, 0, 1, ...): the level whose turn it is, or
# the next lower level with jobs waiting (wrapping round to the highest). So every level with
# jobs waiting gets at least one start in FAIR * PRIORITIES (100) of each worker's starts:
# lower levels are slowed, never starved. ARGV[7] is the worker's count of jobs started
# from the queue so far, which places this batch in the rotation.
FAIR = 10
FETCH = (
    _PRELUDE
    + r"""
local budget, turn, FAIR = tonumber(ARGV[6]), tonumber(ARGV[7]), __FAIR__
local now = now_ms()
local out, fair = {}, {}         -- fair: {place in this batch, its started job} per fair turn

-- Start up to `count` new entries of level p into `dest`; returns how many entries were read.
local function read(p, count, dest)
  use_level(p)
  local cmd = {'XREADGROUP', 'GROUP', GROUP, CONSUMER, 'COUNT', count, 'STREAMS', STREAM, '>'}
  local r = redis.pcall(unpack(cmd))
  if type(r) == 'table' and r.err and string.find(r.err, 'NOGROUP') then
    ensure_group()                              -- Redis lost the group (restart without data)
    r = redis.pcall(unpack(cmd))
  end
  if type(r) == 'table' and r.err then
    fault(r.err)
    return 0
  end
  if not r then return 0 end
  start(r[1][2], now, dest)
  return #r[1][2]
end

-- Levels that may hold jobs, highest first: an empty stream (most of them, for most queues)
-- costs one XLEN. Level 0 is always read (it recreates a lost group).
local live = {}
for p = PRIORITIES - 1, 1, -1 do
  if level_len(p) > 0 then live[#live + 1] = p end
end
live[#live + 1] = 0

if #live > 1 then
  for k = turn + 1, turn + budget do
    if k % FAIR == 0 then
      local want = (k / FAIR) % PRIORITIES
      while #live > 0 do
        local i = 1                                 -- wrap: the highest level
        for j, p in ipairs(live) do
          if p <= want then i = j; break end
        end
        local got = {}
        if read(live[i], 1, got) > 0 then
          fair[#fair + 1] = {k - turn, got}
          budget = budget - 1
          break
        end
        table.remove(live, i)                       -- nothing new at that level
      end
    end
  end
end
for _, p in ipairs(live) do
  if budget <= 0 then break end
  budget = budget - read(p, budget, out)
end
if #out == 0 and #fair == 0 and FAULT then return noted(redis.error_reply(FAULT)) end
if #fair == 0 then return noted(out) end
-- each fair turn at its place, so the worker starts jobs in turn order whatever its batches
local merged, g = {}, 1
for _, f in ipairs(fair) do
  while #merged + 1 < f[1] and g <= #out do
    merged[#merged + 1] = out[g]
    g = g + 1
  end
  for _, row in ipairs(f[2]) do merged[#merged + 1] = row end
end
for i = g, #out do merged[#merged + 1] = out[i] end
return noted(merged)
""".replace("__FAIR__", str(FAIR))
)

# Start what a blocking XREADGROUP (of every level's stream) just delivered to this consumer:
# per level from the highest, its pending entries after the newest id this worker had seen
# there (ARGV[7 + level]), at most ARGV[6] in all. Pipelined right behind the blocking read on
# the same connection, it runs the moment the read returns, so an idle worker starts a job
# with no extra round trip; after a lost connection, a resent pair finds what the first read
# delivered too. Entries this worker already runs (taken over by its reclaimer) are left
# alone; entries beyond ARGV[6] (several levels written at once) are handed back: re-added at
# the end of their stream, for any worker.
START_NEW = (
    _PRELUDE
    + r"""
SKIP_MINE = true
local budget = tonumber(ARGV[6])
local now = now_ms()
local out = {}
for p = PRIORITIES - 1, 0, -1 do
  if p == 0 or level_len(p) > 0 then              -- an empty stream (most levels): one XLEN
    use_level(p)
    local entries, from = {}, '(' .. ARGV[7 + p]
    while from do
      local pend = redis.pcall('XPENDING', STREAM, GROUP, from, '+', 100, CONSUMER)
      if type(pend) ~= 'table' or pend.err then break end
      for _, row in ipairs(pend) do
        local e = redis.call('XRANGE', STREAM, row[1], row[1])[1]
        local jid = e and field(e[2], 'id')
        local rec = jid and redis.pcall('HMGET', JOBP .. jid, 'status', 'worker')
        if rec and not rec.err and rec[1] == 'running' and rec[2] == CONSUMER then
          -- this worker runs it already
        elseif budget > 0 then
          entries[#entries + 1] = e or {row[1], false}
          budget = budget - 1
        elseif not e then
          redis.call('XACK', STREAM, GROUP, row[1])
        else
          drop(row[1])
          redis.call('XADD', STREAM, '*', unpack(e[2]))
        end
      end
      from = #pend == 100 and ('(' .. pend[#pend][1]) or nil
    end
    start(entries, now, out)
  end
end
return noted(out)
"""
)

# Take over entries whose lease lapsed (idle > ARGV[6] ms), at most ARGV[7], from the highest
# priority down, scanning each level's stream from its cursor (ARGV[8 + level]). Returns
# {next cursors by level, started jobs}.
RECLAIM = (
    _PRELUDE
    + r"""
local budget = tonumber(ARGV[7])
local now = now_ms()
local out, cursors = {}, {}
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
      start(r[2], now, out)
    end
  end
end
if #out == 0 and FAULT then return noted(redis.error_reply(FAULT)) end
return noted({cursors, out})
"""
)

# Finish a batch of jobs. KEYS: stream, dead, scheduled. ARGV 1-5 as the prelude, then records
# of 8 values: op, entry id, job id, attempt, a, b, c, d. A record is applied only while the job
# record says this consumer runs the current attempt (fencing): whoever takes an entry over
# (reclaim) or finishes it rewrites `worker`, `attempts` or `status` in the same script, so a
# worker frozen past its lease writes nothing over the new owner's work. Returns the fenced ids.
#   ok       a = result JSON
#   fail     a = error, b = exc_type, c = traceback
#   retry    a, b, c as fail; d = delay ms (0: back on the stream now)
#   dead     a = reason: the job fails and the raw entry goes to the dead-letter stream
#   release  hand an unfinished job back to the stream (worker shutdown)
#   cancelled  the running coroutine was cancelled by job.cancel()
# A job flagged by job.cancel() ends "cancelled" whatever the record says. Entries are
# acknowledged and deleted with one XACK and one XDEL for the whole batch.
COMPLETE = (
    _PRELUDE
    + r"""
local SCHEDULED = KEYS[3]
local now = now_ms()
local fenced, done = {}, {}
for i = 6, #ARGV, 8 do
  local op, eid, jid, att = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = JOBP .. jid
  -- pcall: a foreign key of another type is not ours to write
  local rec = redis.pcall('HMGET', key, 'attempts', 'worker', 'status', 'cancel')
  if rec.err or rec[1] ~= att or rec[2] ~= CONSUMER or rec[3] ~= 'running' then
    fenced[#fenced + 1] = jid
  else
    if rec[4] then op = 'cancelled' end        -- job.cancel() won the race with the outcome
    if op == 'ok' then
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
      redis.call('HSET', key, 'status', status, 'error', ARGV[i + 4], 'exc_type', ARGV[i + 5],
                 'traceback', ARGV[i + 6], 'deliveries', 0)
      if delay > 0 then
        redis.call('ZADD', SCHEDULED, now + delay, jid)
      else
        redis.call('XADD', STREAM, '*', 'id', jid)
      end
    elseif op == 'release' then
      redis.call('HSET', key, 'status', 'queued')
      redis.call('HINCRBY', key, 'deliveries', -1)
      redis.call('XADD', STREAM, '*', 'id', jid)
    end
    done[#done + 1] = eid
  end
end
if #done > 0 then
  -- pcall: after a Redis restart without data the stream and group may be gone
  redis.pcall('XACK', STREAM, GROUP, unpack(done))
  redis.pcall('XDEL', STREAM, unpack(done))
end
return noted(fenced)
"""
)

# Renew the leases of entries this consumer still owns (XCLAIM ... JUSTID resets their idle
# time without counting a delivery). ARGV: group, consumer, entry ids. Returns the ids that are
# no longer ours: their lease lapsed and another worker took them, or they were finished.
RENEW = r"""
local mine, lost = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}, {}
for i = 3, #ARGV do
  -- pcall: a stream (and group) lost in a Redis restart means every entry is lost, not an
  -- error (an error would end the worker's renewals for good)
  local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then mine[#mine + 1] = ARGV[i] else lost[#lost + 1] = ARGV[i] end
end
if #mine > 5 then
  mine[#mine + 1] = 'JUSTID'
  redis.call(unpack(mine))
end
return lost
"""

# Hand every entry still pending for this consumer back to its stream at once (shutdown), then
# remove the consumer. KEYS: the queue's streams. ARGV: group, consumer. Returns how many jobs
# went back.
RELEASE_ALL = r"""
local GROUP, CONSUMER = ARGV[1], ARGV[2]
local JOBP = string.match(KEYS[1], '^(.*}:)') .. 'job:'
local n = 0
for _, STREAM in ipairs(KEYS) do
while true do
  local p = redis.pcall('XPENDING', STREAM, GROUP, '-', '+', 500, CONSUMER)
  if type(p) ~= 'table' or p.err or #p == 0 then break end
  for _, row in ipairs(p) do
    local eid = row[1]
    local e = redis.call('XRANGE', STREAM, eid, eid)
    local jid = e[1] and e[1][2][1] == 'id' and e[1][2][2]
    if jid then
      local key = JOBP .. jid
      local status = redis.call('HGET', key, 'status')
      if status == 'running' then
        redis.call('HSET', key, 'status', 'queued')
        redis.call('HINCRBY', key, 'deliveries', -1)
      end
      if status == 'running' or status == 'queued' then
        redis.call('XADD', STREAM, '*', 'id', jid)
        n = n + 1
      end
    end
    redis.call('XACK', STREAM, GROUP, eid)
    redis.call('XDEL', STREAM, eid)
  end
end
redis.pcall('XGROUP', 'DELCONSUMER', STREAM, GROUP, CONSUMER)
end
return n
"""

# Move due scheduled jobs onto the stream; those past their expiry end "expired" instead.
# KEYS: scheduled, the queue's priority-0 stream (a job of priority p goes to its stream p).
# ARGV: limit, result ttl (s).
# Returns {moved, next due ms or -1, now ms}. ZREM decides who moves a job, so several workers
# promoting at once never duplicate one.
PROMOTE = (
    _HELPERS
    + r"""
if redis.replicate_commands then redis.replicate_commands() end
local now = now_ms()
local TAG = string.sub(KEYS[2], 1, #KEYS[2] - 6)
local JOBP = TAG .. 'job:'
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
local moved = 0
for _, jid in ipairs(ids) do
  redis.call('ZREM', KEYS[1], jid)
  local key = JOBP .. jid
  local rec = redis.pcall('HMGET', key, 'status', 'expires_at', 'priority')
  if not rec.err and rec[1] == 'scheduled' then
    if rec[2] and now > (tonumber(rec[2]) or math.huge) then
      redis.call('HSET', key, 'status', 'expired', 'finished_at', now,
                 'error', 'not started before it expired')
      if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', key, ARGV[2]) end
      redis.call('PUBLISH', TAG .. 'done:' .. jid, 'expired')
    else
      redis.call('HSET', key, 'status', 'queued')
      redis.call('XADD', level_stream(KEYS[2], rec[3]), '*', 'id', jid)
      moved = moved + 1
    end
  end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {moved, tonumber(nxt[2]) or -1, now}
"""
)

# Cancel a job. KEYS: job, scheduled. ARGV: job id, result ttl (s). Returns 1 when a queued or
# scheduled job was cancelled (it will never start: its stream entry is dropped at delivery),
# 2 when a running job was flagged and its workers were signalled, 0 when it had finished,
# -1 when there is no such job.
CANCEL = (
    _HELPERS
    + r"""
if redis.replicate_commands then redis.replicate_commands() end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
local TAG = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[1] - 4)        -- "aioq:{app:queue}:"
if status == 'queued' or status == 'scheduled' then
  local now = now_ms()
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', now)
  if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
  redis.call('PUBLISH', TAG .. 'done:' .. ARGV[1], 'cancelled')
  return 1
elseif status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  redis.call('PUBLISH', TAG .. 'cancel', ARGV[1])
  return 2
end
return 0
"""
)
