-- Shared by the worker's scripts: `start`, which turns delivered stream entries into started
-- jobs, and its helpers. KEYS: the queue's (queue.lua). ARGV for every script using `start`:
-- 1 group, 2 consumer, 3 max deliveries, 4 result ttl (s), 5 dead-letter stream length cap. A
-- queue has one stream per priority (keys.py); scripts reading several set the one they work
-- on with `use_level`.
if redis.replicate_commands then redis.replicate_commands() end
local GROUP, CONSUMER = ARGV[1], ARGV[2]
local MAX_DELIVERIES, TTL, DEAD_MAX = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
--#include finish
local STREAM, LEVEL = STREAMS[0], 0                      -- the stream worked on, its priority

local function use_level(p)
  LEVEL = p
  STREAM = STREAMS[p]
end
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

local function drop(eid)
  redis.call('XACK', STREAM, GROUP, eid)
  redis.call('XDEL', STREAM, eid)
end
--#include broadcast

-- Rate limits (see ratelimit.py): a sliding-window log of start times per task (window.lua),
-- and per key for a keyed job with a key_rate_limit (keyed.lua). The queue's `ratelimits` hash
-- holds "<limit> <period ms>" per task, and an override under "<task>!" that wins. Looked up
-- once per task per script call, and not at all when the queue has no limits. A start is
-- recorded in a log only once every limit on the job allowed it (a log holding starts that
-- never happened would slow its task or key below its limit).
--#include window
local RATEP, RATEW = TAG .. '{{KEY_RATE}}', TAG .. '{{KEY_RATEWAIT}}'
local limits = nil
local function task_limit(task)
  if limits == nil then
    limits = {}
    if redis.call('EXISTS', RATES) == 0 then limits = false end
  end
  if not limits or not task then return false end
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
  return lim
end

-- Whether the job may start now (its start is then recorded); if not, it goes back to the
-- scheduled set for when it may, and holds no slot and spends no attempt (a keyed job keeps
-- its key's place meanwhile: keyed.lua). `g`, `kn`, `kp`: the job's key group and its rate
-- limit (n starts per kp ms; 0: none), nil for a job without a key.
local function rate_allows(task, eid, jid, now, g, kn, kp)
  local keyrate = g and kn > 0 and kp > 0
  local lim = task_limit(task)
  if not lim and not keyrate then return true end
  local due, why = nil, nil
  if keyrate then
    due = window().due(TAG .. '{{KEY_KEYRATE}}' .. g, TAG .. '{{KEY_KEYRATEWAIT}}' .. g, kn, kp,
                       jid, now)
    why = 'key rate limit'
  end
  if lim and not due then
    due = window().due(RATEP .. task, RATEW .. task, lim[1], lim[2], jid, now)
    why = 'rate limit'
  end
  if due then
    redis.call('HSET', JOBP .. jid, 'status', 'scheduled', 'wait', why)
    redis.call('ZADD', SCHEDULED, due, jid)
    return false
  end
  local member = LEVEL .. ':' .. eid                      -- entry ids repeat across levels
  if lim then window().add(RATEP .. task, member, lim[2], now) end
  if keyrate then window().add(TAG .. '{{KEY_KEYRATE}}' .. g, member, kp, now) end
  return true
end

-- Mark delivered entries (of STREAM) as started jobs, appended to `out`; bury what is not a
-- job or is poison. Each started job: entry id, job id, attempt, task, args, kwargs, timeout,
-- retries, priority, trace (the trace-context carrier, nil when the job has none), input (the
-- JSON value a workflow step gets from its predecessor as first argument, nil for others), sig
-- (its signature, nil when unsigned: the worker checks it, signing.py). A keyed job of a key
-- limited by rate only gives its key's place back once it starts.
local function start(entries, now, out)
  out = out or {}
  local read_keyed = keys_used()                 -- the `keyed` field too: keyed.lua
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
        if read_keyed then                         -- two literal lists: no table per job
          v = redis.pcall('HMGET', JOBP .. jid, 'status', 'cancel', 'deliveries', 'attempts',
                          'task', 'args', 'kwargs', 'timeout', 'retries', 'expires_at',
                          'worker', 'trace', 'input', 'sig', 'for', 'keyed')
        else
          v = redis.pcall('HMGET', JOBP .. jid, 'status', 'cancel', 'deliveries', 'attempts',
                          'task', 'args', 'kwargs', 'timeout', 'retries', 'expires_at',
                          'worker', 'trace', 'input', 'sig', 'for')
        end
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
      if problem then
        bury(eid, jid, problem, fields, now)
        if hashed and not TERMINAL[status] then              -- a missing record is created failed
          finish(jid, 'failed', now, 'error', problem, 'exc_type', 'BadJob')
        end
        drop(eid)
      elseif TERMINAL[status] or status == 'scheduled' then
        drop(eid)                                           -- cancelled while queued, or stale
        local g, c, n = key_parse(TERMINAL[status] and v[5], v[16])
        if g then
          -- a keyed job cancelled while it waited for a place, and given one since: the place
          -- goes on, and its record, kept until now (cancel.lua), expires as any finished one
          local K = keyed()
          K.release(jid, LEVEL, g, K.cap(c, n), now)
          if TTL > 0 then redis.call('EXPIRE', JOBP .. jid, TTL) end
        end
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
      elseif v[15] and v[15] ~= CONSUMER then
        hand_over_copy(eid, jid, v[15], status, d, a, now)   -- a broadcast copy (broadcast.lua)
      else
        local g, c, n, p = key_parse(v[5], v[16])
        if not rate_allows(v[5], eid, jid, now, g, n, p) then
          drop(eid)                        -- back in the scheduled set: no slot, no attempt spent
        else
          redis.call('HSET', JOBP .. jid, 'status', 'running', 'started_at', now,
                     'worker', CONSUMER, 'deliveries', d + 1, 'attempts', a + 1)
          out[#out + 1] = {eid, jid, a + 1, v[5], v[6], v[7], v[8], v[9], LEVEL, v[12], v[13],
                           v[14]}
          if g and c == 0 then keyed().release(jid, LEVEL, g, keyed().cap(c, n), now) end
        end
      end
    end
  end
  return out
end

-- The started-job row (as `start` makes it, attempt unchanged) of an entry whose record says
-- this consumer runs it, or nil. A worker that holds such an entry in Redis either runs it
-- (and the row is ignored) or lost the reply that started it, and runs it now (RECOVER).
local function held_row(eid, jid)
  local v = redis.pcall('HMGET', JOBP .. jid, 'status', 'worker', 'attempts', 'task', 'args',
                        'kwargs', 'timeout', 'retries', 'trace', 'input', 'sig')
  if v.err or v[1] ~= 'running' or v[2] ~= CONSUMER then return nil end
  return {eid, jid, tonumber(v[3]) or 0, v[4], v[5], v[6], v[7], v[8], LEVEL, v[9], v[10], v[11]}
end

-- Call fn(entry id, entry or nil, job id or nil) for each entry of STREAM pending for this
-- consumer after `from` (an XPENDING range start: '-' or '(<id>'), paging through them.
local function each_pending(from, fn)
  while from do
    local pend = redis.pcall('XPENDING', STREAM, GROUP, from, '+', 200, CONSUMER)
    if type(pend) ~= 'table' or pend.err then return end
    for _, row in ipairs(pend) do
      local e = redis.call('XRANGE', STREAM, row[1], row[1])[1]
      fn(row[1], e, e and field(e[2], 'id'))
    end
    from = #pend == 200 and ('(' .. pend[#pend][1]) or nil
  end
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
