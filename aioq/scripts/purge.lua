-- Delete up to ARGV[3] queued entries (never delivered to the group ARGV[1], so never a running
-- job's entry in the pending list) with ids up to ARGV[2], and the records of their jobs that
-- are still queued; their waiters are woken and find the job gone. Returns {entries scanned,
-- jobs deleted}; 0 entries: done. KEYS: one of the queue's streams (it is called once per
-- priority), the queue's guard (keys.py). A keyed job deleted gives its key's place up
-- without passing it on (PURGE_KEYED has deleted the jobs waiting for it first).
--#include helpers
if redis.replicate_commands then redis.replicate_commands() end
local STREAM = KEYS[1]
local JOBP, DONEP = tag_of(STREAM) .. '{{KEY_JOB}}', tag_of(STREAM) .. '{{KEY_DONE}}'
local KEYRUNP = tag_of(STREAM) .. '{{KEY_KEYRUN}}'
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
  local v = jid and redis.pcall('HMGET', JOBP .. jid, 'status', 'task', 'keyed', 'priority')
  if v and not v.err and v[1] == 'queued' then
    local g, c, n = key_parse(v[2], v[3])
    if g then                                             -- the place it held on its key
      local places = (c > 0 and c) or (n > 0 and n) or 1    -- keyed.lua's key_cap, key_member
      redis.call('LREM', KEYRUNP .. g, 1, level_of(v[4]) .. ':' .. places .. ':' .. jid)
    end
    redis.call('DEL', JOBP .. jid)
    redis.call('PUBLISH', DONEP .. jid, 'purged')
    jobs = jobs + 1
  end
  redis.call('XDEL', STREAM, e[1])
end
return {#entries, jobs}
