"""Redis-side cost of aioq's worker scripts per job, and of leaner variants (prototypes).

    .venv/bin/python benchmarks/profile_scripts.py [--n 20000] [--batch 100]

Enqueues N jobs with app.enqueue_many, then calls the worker's scripts directly (no worker
process) in batches, and reads Redis's own accounting (INFO commandstats) after each phase:
EVALSHA time per job and the time of every command the script ran. Phases:

  aioq FETCH      scripts.FETCH, COUNT <batch>, until the stream is empty
  aioq COMPLETE   scripts.COMPLETE with one "ok" record per job (8 values each)
  lean FETCH      the same reads and writes as `start` for a valid queued job, with one HMGET
                  and one HSET per job instead of HMGET + 2 HINCRBY + HSET + HMGET
  lean COMPLETE*  "ok" records of 4 values; fence on the job hash (attempts, status, worker,
                  cancel: one HMGET) instead of XPENDING + HMGET; then HSET, EXPIRE, PUBLISH
                  per job and ONE variadic XACK per batch, and the entries removed by
                    -xdel1   XDEL per entry (as aioq does now)
                    -xdelN   one variadic XDEL per batch
                    -xtrim   one XTRIM MINID <oldest pending id> per batch (XDEL when none)
                    -nopub   as -xtrim without the per-job PUBLISH (what pushing costs)

Then the ENQUEUE script (awaited one at a time, as `await task.enqueue()` does) against
  enqueue-noexists  ENQUEUE without the per-call EXISTS on the stream (the XGROUP CREATE
                    branch; the worker creates the group at id 0 anyway) and without the
                    redis.replicate_commands() call (a no-op on Redis >= 5)
  enqueue-floor     only HSET + XADD (no idempotency check, no TIME): the floor of a script
  xadd              the raw ceiling's plain XADD

The lean variants are measurement prototypes for the 'ok' path only (no bury/poison/retry
branches); they are here to size what a rewrite of aioq/scripts/worker.py can win, not to be used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import redis.asyncio as aredis  # noqa: E402
from bench_core import redis_server  # noqa: E402

LEAN_START = r"""
local function start_lean(entries, now)
  local out = {}
  for _, e in ipairs(entries) do
    local eid, fields = e[1], e[2]
    if fields and #fields == 2 and fields[1] == 'id' then
      local jid = fields[2]
      local key = JOBP .. jid
      local v = redis.call('HMGET', key, 'status', 'cancel', 'deliveries', 'attempts',
                           'task', 'args', 'kwargs', 'timeout', 'retries')
      if v[1] == 'queued' and not v[2] then
        local d = (tonumber(v[3]) or 0) + 1
        local a = (tonumber(v[4]) or 0) + 1
        redis.call('HSET', key, 'status', 'running', 'started_at', now, 'worker', CONSUMER,
                   'deliveries', d, 'attempts', a)
        out[#out + 1] = {eid, jid, a, v[5], v[6], v[7], v[8], v[9]}
      end
    end
  end
  return out
end
local read = {'XREADGROUP', 'GROUP', GROUP, CONSUMER, 'COUNT', ARGV[6], 'STREAMS', STREAM, '>'}
local r = redis.call(unpack(read))
if not r then return {} end
return start_lean(r[1][2], now_ms())
"""

LEAN_COMPLETE = r"""
local now = now_ms()
local acks, fenced = {}, {}
for i = 6, #ARGV, 4 do
  local eid, jid, att = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = JOBP .. jid
  local rec = redis.call('HMGET', key, 'attempts', 'status', 'worker', 'cancel')
  if rec[1] ~= att or rec[2] ~= 'running' or rec[3] ~= CONSUMER then
    fenced[#fenced + 1] = jid
  else
    local status = rec[4] and 'cancelled' or 'succeeded'
    redis.call('HSET', key, 'status', status, 'finished_at', now, 'result', ARGV[i + 3])
    if TTL > 0 then redis.call('EXPIRE', key, TTL) end
    if __PUB__ then redis.call('PUBLISH', DONEP .. jid, status) end
    acks[#acks + 1] = eid
  end
end
if #acks > 0 then
  redis.call('XACK', STREAM, GROUP, unpack(acks))
  local mode = '__MODE__'
  if mode == 'xdel1' then
    for _, eid in ipairs(acks) do redis.call('XDEL', STREAM, eid) end
  elseif mode == 'xdelN' then
    redis.call('XDEL', STREAM, unpack(acks))
  else
    local s = redis.call('XPENDING', STREAM, GROUP)
    if s[1] > 0 then
      redis.call('XTRIM', STREAM, 'MINID', s[2])
    else
      redis.call('XDEL', STREAM, unpack(acks))
    end
  end
end
return fenced
"""


ENQUEUE_NOEXISTS = r"""
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = now + tonumber(ARGV[2])
if tonumber(ARGV[3]) > 0 then due = tonumber(ARGV[3]) end
local status = 'queued'
if due > now then status = 'scheduled' end
redis.call('HSET', KEYS[1], 'status', status, 'enqueued_at', now, 'attempts', 0,
           'task', ARGV[4], 'queue', ARGV[5], 'args', ARGV[6], 'kwargs', ARGV[7],
           'retries', ARGV[8], 'timeout', ARGV[9])
if due > now then
  redis.call('ZADD', KEYS[3], due, ARGV[1])
else
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
end
return 1
"""

ENQUEUE_FLOOR = r"""
redis.call('HSET', KEYS[1], 'status', 'queued', 'enqueued_at', 0, 'attempts', 0,
           'task', ARGV[4], 'queue', ARGV[5], 'args', ARGV[6], 'kwargs', ARGV[7],
           'retries', ARGV[8], 'timeout', ARGV[9])
redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
return 1
"""


async def enqueue_costs(r: aredis.Redis, app: Any, noop: Any, n: int) -> None:
    from aioq import scripts as S

    keys = app.keys()
    fields = noop.call().prepare()[1][5:]  # the job_fields values
    if len(fields) != 6:  # the field layout these prototypes assume (ARGV[4..9])
        print(f"(enqueue variants skipped: prepare() gives {len(fields)} fields, not 6)")
        return
    scripts = {
        "enqueue (aioq)": r.register_script(S.ENQUEUE),
        "enqueue-noexists": r.register_script(ENQUEUE_NOEXISTS),
        "enqueue-floor": r.register_script(ENQUEUE_FLOOR),
    }
    for label, sc in scripts.items():
        await r.flushall()
        await sc(keys=[keys.job("warm"), keys.stream, keys.scheduled], args=["warm", 0, 0, *fields])
        await phase(r, n)
        for i in range(n):
            j = f"j{i}"
            await sc(keys=[keys.job(j), keys.stream, keys.scheduled], args=[j, 0, 0, *fields])
        show(label, await phase(r, n))
    await r.flushall()
    for _ in range(n):
        await r.xadd("raw:tasks", {"t": "noop", "i": 1})
    st = await r.info("commandstats")
    await r.config_resetstat()
    show("xadd", {"evalsha": st["cmdstat_xadd"]["usec"] / n, "calls": n, "inner": {}})


async def phase(r: aredis.Redis, n: int) -> dict[str, Any]:
    st = await r.info("commandstats")
    await r.config_resetstat()
    calls = {k[8:]: v for k, v in st.items() if k.startswith("cmdstat_")}
    ev = calls.pop("evalsha", {"usec": 0, "calls": 0})
    inner = {k: v["usec"] / n for k, v in calls.items() if v["usec"] / n >= 0.05}
    return {"evalsha": ev["usec"] / n, "calls": ev["calls"], "inner": inner}


SEEN: dict[str, list[dict[str, Any]]] = {}


def show(label: str, p: dict[str, Any]) -> None:
    SEEN.setdefault(label, []).append(p)
    inner = sum(p["inner"].values())
    parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(p["inner"].items(), key=lambda kv: -kv[1]))
    print(
        f"{label:22} {p['evalsha']:6.2f} us/job in EVALSHA ({p['calls']} calls); commands "
        f"{inner:5.2f}, Lua {p['evalsha'] - inner:5.2f} | {parts}",
        flush=True,
    )


async def run(url: str, n: int, batch: int, repeats: int) -> None:
    os.environ["AIOQ_REDIS_URL"] = url
    import bench_tasks as bt

    from aioq import scripts as S

    bt.app.rebind(redis_url=url)
    app = bt.app
    r = aredis.from_url(url)
    keys = app.keys()
    wa = S.WorkerArgs("bench-consumer", app.max_deliveries, app.result_ttl, app.dead_letter_max)
    fetch = r.register_script(S.FETCH)
    complete = r.register_script(S.COMPLETE)
    lean_fetch = r.register_script(S._PRELUDE + LEAN_START)
    variants = {}
    for mode in ("xdel1", "xdelN", "xtrim"):
        src = LEAN_COMPLETE.replace("__MODE__", mode).replace("__PUB__", "true")
        variants[mode] = r.register_script(S._PRELUDE + src)
    src = LEAN_COMPLETE.replace("__MODE__", "xtrim").replace("__PUB__", "false")
    variants["nopub"] = r.register_script(S._PRELUDE + src)
    k2 = k3 = list(keys.declared)  # every worker script gets the queue's keys (queue.lua)

    async def fill() -> None:
        await r.flushall()
        for i in range(0, n, 5000):
            await app.enqueue_many([bt.noop.call() for _ in range(min(5000, n - i))])
        await r.xgroup_create(keys.stream, "aioq", id="0")  # a worker creates it at start
        await phase(r, n)

    async def fetch_all(script: Any) -> list[Any]:
        rows: list[Any] = []
        while True:
            got = await script(keys=k2, args=[*wa.args, batch, 0])  # turn 0 (FETCH)
            if not got:
                return rows
            rows.extend(got)

    print(f"{n} jobs, batches of {batch}, redis at {url}")
    for rep in range(repeats):
        print(f"-- repeat {rep + 1}")
        await fill()
        rows = await fetch_all(fetch)
        assert len(rows) == n, len(rows)
        show("aioq FETCH", await phase(r, n))
        for i in range(0, n, batch):
            recs: list[Any] = []
            for row in rows[i : i + batch]:
                recs += ["ok", row[0], row[1], row[2], b"null", "", "", 0]
            fenced, _ = await complete(keys=k3, args=[*wa.args, 0, *recs])  # priority 0
            assert not fenced, fenced[:3]
        show("aioq COMPLETE", await phase(r, n))
        for mode, script in variants.items():
            await fill()
            rows = await fetch_all(lean_fetch)
            assert len(rows) == n, len(rows)
            if mode == "xdel1":
                show("lean FETCH", await phase(r, n))
            else:
                await phase(r, n)
            for i in range(0, n, batch):
                recs = []
                for row in rows[i : i + batch]:
                    recs += [row[0], row[1], row[2], b"null"]
                fenced = await script(keys=k3, args=[*wa.args, *recs])
                assert not fenced, fenced[:3]
            show(f"lean COMPLETE-{mode}", await phase(r, n))
            left = await r.xlen(keys.stream)
            if left:
                print(f"   ({left} acked entries left in the stream after the last batch)")
        await enqueue_costs(r, app, bt.noop, min(n, 5000))
    print(f"\nmedian over {repeats} repeats, us of Redis time per job:")
    for label, ps in SEEN.items():
        ev = statistics.median(p["evalsha"] for p in ps)
        cmds = statistics.median(sum(p["inner"].values()) for p in ps)
        names = sorted({k for p in ps for k in p["inner"]})
        per = {k: statistics.median(p["inner"].get(k, 0.0) for p in ps) for k in names}
        parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
        print(f"{label:22} {ev:6.2f}  (commands {cmds:5.2f}, Lua {ev - cmds:5.2f})  {parts}")
    await app.aclose()
    await r.aclose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--unix", action="store_true")
    args = ap.parse_args()
    with redis_server("unix" if args.unix else "tcp", None) as url:
        asyncio.run(run(url, args.n, args.batch, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
