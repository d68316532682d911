"""The Lua helpers the scripts share, prepended to each script that uses them: the enqueue
scripts (``enqueue.py``), the worker's (``worker.py``) and the operations (``ops.py``).
"""

# level_stream: the stream of priority p (string or number) of the queue whose priority-0
# stream is `base`: "<base>:<p>" for 1-9 (keys.py), and anything else is priority 0.
# now_ms: Redis' clock in epoch milliseconds (every script times jobs by Redis, not workers).
# field: a field's value in a flat stream-entry list {name, value, ...}, or nil.
_HELPERS = r"""
local function level_stream(base, p)
  p = tostring(p or '')
  if string.match(p, '^[1-9]$') then return base .. ':' .. p end
  return base
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end
"""
