"""Operations: the Lua behind the ``aioq`` CLI (dead-letter requeue, retry, purge, sharing
``_OPS_PRELUDE``), the workers' heartbeat and task progress. None is on a job's hot path.
Wrapped by the ``Scripts`` methods under "operations" (``__init__.py``), except PROGRESS,
which ``current_job().set_progress`` runs by PROGRESS_SHA (``context.py``).
"""

from __future__ import annotations

import hashlib

from .helpers import _HELPERS

# Shared by REQUEUE_DEAD, RETRY and PURGE. KEYS[1]: the queue's stream (of priority 0, except
# for PURGE, which is called once per priority).
_OPS_PRELUDE = (
    _HELPERS
    + r"""
if redis.replicate_commands then redis.replicate_commands() end
local STREAM = KEYS[1]
local TAG = string.match(STREAM, '^(.*}:)')              -- "aioq:{app:queue}:"
local JOBP, DONEP = TAG .. 'job:', TAG .. 'done:'
local ACTIVE = {queued = true, scheduled = true, running = true}

-- Put a job back on its stream as a fresh attempt: queued, no deliveries held against it (the
-- poison counter), the last outcome cleared, no expiry of the record while it waits (and no
-- `expires_at`: an operator asked for it to run). `attempts` keeps counting every start.
local function requeue(jid)
  local key = JOBP .. jid
  redis.call('HDEL', key, 'error', 'exc_type', 'traceback', 'result', 'cancel', 'worker',
             'started_at', 'finished_at', 'expires_at')
  redis.call('HSET', key, 'status', 'queued', 'deliveries', 0)
  redis.call('PERSIST', key)
  redis.call('ZREM', TAG .. 'failed', jid)
  redis.call('ZREM', TAG .. 'scheduled', jid)
  redis.call('XADD', level_stream(STREAM, redis.call('HGET', key, 'priority')), '*', 'id', jid)
end
"""
)

# Requeue dead-letter entries. KEYS: stream, dead. ARGV: dead-letter entry ids. Returns one
# outcome per id: "requeued" (the entry is deleted), "missing", or why it stays. The job record
# is reset when it exists; when it has expired it is recreated from the entry's `job` copy.
REQUEUE_DEAD = (
    _OPS_PRELUDE
    + r"""
local DEAD = KEYS[2]
local out = {}
for i = 1, #ARGV do
  local eid, outcome = ARGV[i], nil
  local e = redis.call('XRANGE', DEAD, eid, eid)[1]
  if not e then
    outcome = 'missing'
  else
    local jid = field(e[2], 'id')
    if not jid or jid == '' then
      outcome = 'the entry names no job id'
    else
      local key = JOBP .. jid
      local kind = redis.call('TYPE', key)['ok']
      if kind == 'none' then
        -- the copy was taken when the entry was buried (its status is of that moment)
        local ok, rec = pcall(cjson.decode, field(e[2], 'job') or 'null')
        if ok and type(rec) == 'table' and #rec > 0 and #rec % 2 == 0 and field(rec, 'task')
           and type(redis.pcall('HSET', key, unpack(rec))) == 'number' then
          outcome = 'requeued'
        else
          outcome = 'the job record is gone and the entry holds no copy of it'
        end
      elseif kind == 'hash' then
        local rec = redis.call('HMGET', key, 'status', 'task')
        if ACTIVE[rec[1]] then
          outcome = 'the job is ' .. rec[1]
        elseif not rec[2] then
          outcome = 'the job record names no task'
        else
          outcome = 'requeued'
        end
      else
        outcome = 'key ' .. key .. ' is a ' .. kind .. ', not a job record'
      end
      if outcome == 'requeued' then
        requeue(jid)
        redis.call('XDEL', DEAD, eid)
      end
    end
  end
  out[i] = outcome
end
return out
"""
)

# Retry failed jobs. KEYS: stream. ARGV: job ids. Returns one outcome per id: "requeued",
# "missing", "not a job record", or the status of a job that is not failed (left alone).
RETRY = (
    _OPS_PRELUDE
    + r"""
local out = {}
for i = 1, #ARGV do
  local st = redis.pcall('HGET', JOBP .. ARGV[i], 'status')
  if type(st) == 'table' and st.err then
    out[i] = 'not a job record'
  elseif not st then
    out[i] = 'missing'
  elseif st ~= 'failed' then
    out[i] = st
  else
    requeue(ARGV[i])
    out[i] = 'requeued'
  end
end
return out
"""
)

# Delete up to ARGV[3] queued entries (never delivered to the group ARGV[1], so never a running
# job's entry in the pending list) with ids up to ARGV[2], and the records of their jobs that
# are still queued; their waiters are woken and find the job gone. Returns {entries scanned,
# jobs deleted}; 0 entries: done.
PURGE = (
    _OPS_PRELUDE
    + r"""
local groups = redis.pcall('XINFO', 'GROUPS', STREAM)
if groups.err then return {0, 0} end                      -- no stream
local from = '-'
for _, g in ipairs(groups) do
  if field(g, 'name') == ARGV[1] then from = '(' .. field(g, 'last-delivered-id') end
end
local entries = redis.call('XRANGE', STREAM, from, ARGV[2], 'COUNT', ARGV[3])
local jobs = 0
for _, e in ipairs(entries) do
  local jid = field(e[2], 'id')
  if jid and redis.pcall('HGET', JOBP .. jid, 'status') == 'queued' then
    redis.call('DEL', JOBP .. jid)
    redis.call('PUBLISH', DONEP .. jid, 'purged')
    jobs = jobs + 1
  end
  redis.call('XDEL', STREAM, e[1])
end
return {#entries, jobs}
"""
)

# A worker's heartbeat. KEYS: the app's workers hash. ARGV: consumer, stats (a JSON object),
# hash ttl (s). Stamps the stats with Redis' time ("beat", epoch ms), so readers judge
# staleness on one clock whatever the workers' clocks say. Returns that time.
HEARTBEAT = (
    _HELPERS
    + r"""
if redis.replicate_commands then redis.replicate_commands() end
local now = now_ms()
redis.call('HSET', KEYS[1], ARGV[1], '{"beat":' .. now .. ',' .. string.sub(ARGV[2], 2))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return now
"""
)

# Record a running job's progress and publish it. KEYS: job, progress channel. ARGV: JSON.
# Each value gets the next `progress_seq`, published as "<seq> <JSON>": a reader that reads
# the stored value after subscribing skips what it has already seen. Returns the sequence
# number (0: no such job, nothing written).
PROGRESS = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local seq = redis.call('HINCRBY', KEYS[1], 'progress_seq', 1)
redis.call('HSET', KEYS[1], 'progress', ARGV[1])
redis.call('PUBLISH', KEYS[2], seq .. ' ' .. ARGV[1])
return seq
"""
PROGRESS_SHA = hashlib.sha1(PROGRESS.encode()).hexdigest()
