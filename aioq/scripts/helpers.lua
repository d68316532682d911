-- The helpers every script may include.
-- tag_of: the hash tag prefix of one of aioq's keys, "aioq:{app:queue}:" (keys.py): the only
--   way the Lua derives it; keys named by data (a job's record) are built on it.
-- level_of: the priority a job record's `priority` field (string, number or nil) stands for:
--   1-9 as written, anything else 0.
-- now_ms: Redis' clock in epoch milliseconds (every script times jobs by Redis, not workers).
-- field: a field's value in a flat stream-entry list {name, value, ...}, or nil.
-- key_group: the flow-control group (keys.py) of a job of `task` whose record's `keyed` field
--   is `keyed` ("<concurrency> <rate n> <rate period ms> <key>", keyed.lua); nil for a job
--   without a key.
local function tag_of(key)
  return string.match(key, '^(.*}:)')
end

local function level_of(p)
  p = tostring(p or '')
  if string.match(p, '^[1-9]$') then return tonumber(p) end
  return 0
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

local function key_group(task, keyed)
  local key = keyed and task and string.match(keyed, '^%d+ %d+ %d+ (.+)$')
  if not key then return nil end
  return task .. '\0' .. key
end

-- key_parse (flow control by key, keyed.lua): the group, and the limits (concurrency, rate n,
-- rate period ms; 0: none), of a job of `task` whose `keyed` field is `keyed`, in one match;
-- nil for a job without a key.
local function key_parse(task, keyed)
  if not keyed or not task then return nil end
  local c, n, p, key = string.match(keyed, '^(%d+) (%d+) (%d+) (.+)$')
  if not c then return nil end
  return task .. '\0' .. key, tonumber(c), tonumber(n), tonumber(p)
end
