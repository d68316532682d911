"""The Lua that writes jobs: ENQUEUE (one job or many, idempotent by job id) and CRON (one
cron tick, at most once), both built on ``_ENQUEUE_JOB``. ENQUEUE_ARGS values describe one
job (``Call.prepare`` in ``task.py`` builds them); ENQUEUE_CHUNK jobs at most go in one call.
"""

from __future__ import annotations

from .helpers import _HELPERS

# Writing one job, shared by ENQUEUE and CRON. ARGV from `a`: job id, delay ms, eta epoch ms
# (0: none), expires in ms (0: never), expires at epoch ms (0: never), task, queue, args, kwargs,
# retries, timeout, priority (0-9: the stream it goes to; recorded when not 0), trace (JSON of
# the trace context, tracing.py; recorded when not ""). Returns 1 when written, 0 when the id
# existed (then nothing is written: a retried enqueue cannot duplicate a job). A job due now is
# stamped with the time of its stream entry id (Redis' clock), so it costs no TIME call; the
# worker creates the consumer group if the stream is new (NOGROUP), at id 0, so nothing
# enqueued first is missed.
ENQUEUE_ARGS = 13
_ENQUEUE_JOB = (
    _HELPERS
    + r"""
if redis.replicate_commands then redis.replicate_commands() end
local clock = nil
local function time_ms()
  if not clock then clock = now_ms() end   -- one TIME per call, however many jobs
  return clock
end

local function enqueue_job(stream, scheduled, key, a)
  if redis.call('EXISTS', key) == 1 then return 0 end
  local jid = ARGV[a + 1]
  local delay, eta = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local status, stamp = 'queued', nil
  if delay > 0 or eta > 0 then
    local now = time_ms()
    local due = now + delay
    if eta > 0 then due = eta end
    if due > now then
      status, stamp = 'scheduled', now
      redis.call('ZADD', scheduled, due, jid)
    end
  end
  local lane = level_stream(stream, ARGV[a + 12])        -- the stream of the job's priority
  if not stamp then
    stamp = tonumber(string.match(redis.call('XADD', lane, '*', 'id', jid), '^%d+'))
  end
  local expires_in, expires_at = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  if expires_in > 0 then expires_at = stamp + expires_in end
  redis.call('HSET', key, 'status', status, 'enqueued_at', stamp, 'attempts', 0,
             'task', ARGV[a + 6], 'queue', ARGV[a + 7], 'args', ARGV[a + 8],
             'kwargs', ARGV[a + 9], 'retries', ARGV[a + 10], 'timeout', ARGV[a + 11])
  if expires_at > 0 then redis.call('HSET', key, 'expires_at', expires_at) end
  if lane ~= stream then redis.call('HSET', key, 'priority', ARGV[a + 12]) end
  if ARGV[a + 13] ~= '' then redis.call('HSET', key, 'trace', ARGV[a + 13]) end
  return 1
end
"""
)

# Enqueue one job or many. KEYS: stream, scheduled, then one job key per job; ARGV: the
# ENQUEUE_ARGS values of each job in turn. Returns one 1/0 per job.
ENQUEUE_CHUNK = 200
ENQUEUE = (
    _ENQUEUE_JOB
    + r"""
local out = {}
for j = 3, #KEYS do
  out[#out + 1] = enqueue_job(KEYS[1], KEYS[2], KEYS[j], (j - 3) * __N__)
end
return out
""".replace("__N__", str(ENQUEUE_ARGS))
)

# Fire one cron tick. KEYS: stream, scheduled, job, cron state. ARGV: tick epoch ms, mode, then
# the job's ENQUEUE_ARGS values. The state holds the last tick handled, so a tick fires at most
# once and never after a later one, however many workers race; the job id names the tick, so
# even a state lost with Redis cannot fire it twice while the job record lives. Mode "fire"
# enqueues; "mark" only advances the state (first start, or a tick skipped by the catch-up
# policy). Returns 1 when the tick's job was written, 0 otherwise.
CRON = (
    _ENQUEUE_JOB
    + r"""
local tick = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[4]) or '-1')
if tick <= last then return 0 end
redis.call('SET', KEYS[4], ARGV[1])
if ARGV[2] ~= 'fire' then return 0 end
return enqueue_job(KEYS[1], KEYS[2], KEYS[3], 2)
"""
)
