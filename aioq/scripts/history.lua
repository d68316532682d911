-- A job's failure history: the `history` field of its record, a JSON list of earlier attempts'
-- failures, oldest first: {attempt, error, exc_type, at (epoch ms), traceback}. A failure that
-- is retried (COMPLETE's 'retry', an operator's retry or requeue) goes there, so the record's
-- `error` fields only ever describe the job's final outcome: a job that succeeds on its third
-- attempt carries no error, only the history of the two before.
local HISTORY_MAX = 10                         -- entries kept (the oldest go first)

-- Append one attempt's failure; only the newest entry keeps its traceback (the others' would
-- make the record grow with every retry). Values that are false/nil are left out.
local function remember(key, attempt, err, exc_type, tb, at)
  local ok, h = pcall(cjson.decode, redis.call('HGET', key, 'history') or '[]')
  if not ok or type(h) ~= 'table' or (next(h) ~= nil and #h == 0) then h = {} end  -- garbage
  for _, e in ipairs(h) do
    if type(e) == 'table' then e.traceback = nil end
  end
  h[#h + 1] = {attempt = tonumber(attempt) or 0, error = err or nil, exc_type = exc_type or nil,
               traceback = tb or nil, at = at}
  while #h > HISTORY_MAX do table.remove(h, 1) end
  redis.call('HSET', key, 'history', cjson.encode(h))
end
