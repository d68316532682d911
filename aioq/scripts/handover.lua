-- Workflow hand-overs (canvas.py, handover.py): what a finished job or a fired join tells its
-- successors, as {id, status, then, payload}: status "succeeded" (payload: the result JSON),
-- "failed" (payload: the failure, `failure` below) or "cancelled" (payload: the failure that
-- cancelled it upstream, or "" when it was cancelled by someone). Needs the queue's keys.
--#include queue

-- A failed step, as it travels down the workflow: who failed and with what.
local function failure(jid, task, err, exc_type, tb)
  return cjson.encode({step = jid, task = task or '', error = err or '',
                       exc_type = exc_type or 'Error', traceback = tb or ''})
end

-- A finished job's hand-over, read from its record (nil: no successors, or not finished).
local function job_handover(jid)
  local v = redis.pcall('HMGET', JOBP .. jid, 'status', 'then', 'result', 'error', 'exc_type',
                        'traceback', 'task', 'cause')
  if v.err or not v[2] then return nil end
  local st = v[1]
  if st == 'succeeded' then return {jid, st, v[2], v[3] or 'null'} end
  if st == 'failed' then return {jid, st, v[2], failure(jid, v[7], v[4], v[5], v[6])} end
  if st == 'expired' then
    return {jid, 'failed', v[2], failure(jid, v[7], v[4], 'JobExpired', '')}
  end
  if st == 'cancelled' then return {jid, st, v[2], v[8] or ''} end
  return nil
end

-- The list of a join's member results, in member order (read 1,000 fields at a time: Lua's
-- unpack has a limit). In "collect" mode a failed member's place holds {"failed": ...}.
local function join_results(key, total)
  local parts = {}
  for s = 0, total - 1, 1000 do
    local names = {}
    for i = s, math.min(s + 999, total - 1) do names[#names + 1] = 'r:' .. i end
    for _, v in ipairs(redis.call('HMGET', key, unpack(names))) do
      if not v then
        v = 'null'
      elseif string.sub(v, 1, 1) == '!' then
        v = '{"failed":' .. string.sub(v, 2) .. '}'
      end
      parts[#parts + 1] = v
    end
  end
  return '[' .. table.concat(parts, ',') .. ']'
end

-- A fired join's hand-over (nil: not fired, or nothing follows it).
local function join_handover(gid)
  local key = FLOWP .. gid
  local g = redis.call('HMGET', key, 'fired', 'then', 'total', 'cause')
  if not g[1] or not g[2] then return nil end
  if g[1] == 'succeeded' then
    return {gid, 'succeeded', g[2], join_results(key, tonumber(g[3]) or 0)}
  end
  return {gid, g[1], g[2], g[4] or ''}
end
