-- The keys of one queue, as every queue script gets them: KEYS 1 to {{QUEUE_KEYS}} are
-- QueueKeys.declared (keys.py), each priority's stream, then the scheduled set, the
-- dead-letter stream, the failed index, the recent stream, the rate limits, the workflows'
-- hand-over outbox, the index of keys with jobs waiting, the key limits declared by the workers'
-- code (keyed.lua) and the guard (never written: see keys.py); a script's own KEYS follow
-- (from OWN_KEYS). Keys named by data (a job's record, a task's rate log) are built
-- on the same hash tag, so a script touches one cluster slot.
--#include helpers
local TAG = tag_of(KEYS[1])                              -- "aioq:{app:queue}:"
local QUEUE = string.match(TAG, '^aioq:{[^:]*:(.*)}:$')  -- names have no ':' (keys.py)
local PRIORITIES = {{PRIORITIES}}
local STREAMS = {}                                       -- by priority, 0 to 9
for p = 0, PRIORITIES - 1 do STREAMS[p] = KEYS[p + 1] end
local SCHEDULED, DEAD, FAILED, RECENT, RATES, FLOWS, KEYED, KEYLIMITS =
  KEYS[PRIORITIES + 1], KEYS[PRIORITIES + 2], KEYS[PRIORITIES + 3], KEYS[PRIORITIES + 4],
  KEYS[PRIORITIES + 5], KEYS[PRIORITIES + 6], KEYS[PRIORITIES + 7], KEYS[PRIORITIES + 8]
local OWN_KEYS = {{QUEUE_KEYS}} + 1
local JOBP, DONEP, FLOWP = TAG .. '{{KEY_JOB}}', TAG .. '{{KEY_DONE}}', TAG .. '{{KEY_FLOW}}'
