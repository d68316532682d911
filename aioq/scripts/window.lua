-- Sliding-window logs, shared by the task rate limits and the key rate limits (start.lua), see
-- ratelimit.py: `log` is a sorted set of the starts of the last `period` ms, and a start is
-- allowed while fewer than `n` fall inside the window ending now, so no window of that length
-- ever holds more than `n` starts. window() makes the functions on first use (a script makes
-- every function it defines each time it runs, and most calls meet no limit):
--
-- due: nil when a start is allowed now (not yet recorded: `add` does that, once every limit on
-- the job allowed it), else the epoch ms the job may try again. Not allowed now, it is due when
-- a start leaves the window. Jobs turned away before and not yet due are counted in `waiting`
-- (job id -> due), across script calls and workers: with r of them waiting, this job waits for
-- the r-th oldest start (one period later per full window). So a backlog comes back spread out
-- at the rate it can start, each job about once, not all of it every period (which made Redis
-- work grow with the backlog).
-- add: record a start (`member` names it: "<level>:<entry id>", entry ids repeat across
-- levels).
local WINDOW_FNS = nil
local function window()
  if WINDOW_FNS then return WINDOW_FNS end
  local function due(log, waiting, n, period, jid, now)
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - period)
    local used = redis.call('ZCARD', log)
    if used < n then return nil end
    redis.call('ZREMRANGEBYSCORE', waiting, '-inf', now)
    local r = redis.call('ZCARD', waiting)
    local oldest = tonumber(redis.call('ZRANGE', log, r % used, r % used, 'WITHSCORES')[2])
    local at = oldest + period * (1 + math.floor(r / used))
    redis.call('ZADD', waiting, at, jid)
    redis.call('PEXPIRE', waiting, at - now + 2 * period)
    return at
  end
  local function add(log, member, period, now)
    redis.call('ZADD', log, now, member)
    redis.call('PEXPIRE', log, period)
  end
  WINDOW_FNS = {due = due, add = add}
  return WINDOW_FNS
end
