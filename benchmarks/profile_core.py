"""Where aioq's time goes: the enqueue path step by step, and the worker's drain.

    .venv/bin/python benchmarks/profile_core.py                 # ladder + drain accounting
    .venv/bin/python benchmarks/profile_core.py --py-spy        # + py-spy of the worker
    .venv/bin/python benchmarks/profile_core.py --cprofile      # + cProfile of both sides

1. enqueue ladder: each step adds one piece of ``await noop.enqueue()`` to a bare redis-py
   XADD, interleaved over the repeats (median of the per-step medians), with the client's CPU
   per call and Redis's own time per command (INFO commandstats):
     xadd-plain       XADD, redis.asyncio.from_url (ConnectionPool, no retry)
     xadd-app         XADD through app.redis (BlockingConnectionPool + Retry)
     evalsha-return1  EVALSHA of ``return 1`` (no keys), plain client
     evalsha-enqueue  EVALSHA of aioq's ENQUEUE script, pre-encoded args, plain client
     evalsha-app      the same through app.redis
     scripts.enqueue  app.scripts.enqueue(...) (redis-py AsyncScript wrapper), prepared call
     task.enqueue     ``await noop.enqueue()``: everything (Call.prepare, uuid, Job, ...)
     lean-pool        a prototype of a leaner call: the same EVALSHA packed by
                      hiredis.pack_command, sent with send_packed_command/read_response on
                      a connection from a plain ConnectionPool (no execute_command, retry,
                      timeouts or observability hooks); Call.prepare and Job not included
     lean-conn        the same on one dedicated connection (no pool at all)
2. drain accounting: N queued jobs, one worker subprocess (``python -m aioq worker``); wall
   time, worker CPU (rusage of the child), redis-server CPU (INFO cpu), EVALSHA calls and
   Redis time per job, average batch per script call, and the same for the raw ceiling.
   With --py-spy the aioq worker runs under ``py-spy record`` (raw folded stacks, kept in
   --out) and the hottest frames are printed (self time, and inclusive time of aioq's own
   functions); with --cprofile under cProfile (BENCH_CPROFILE, see bench_tasks.py).
3. worker CPU per job without Redis: Runner.start/_run/Completer.add on fake fetch rows in
   process, next to the raw worker's create_task + callback, and the pieces (parse_delivery,
   app.redis, JobContext, packing the COMPLETE command with redis-py vs hiredis).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import os
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import redis.asyncio as aredis  # noqa: E402
from bench_core import redis_server  # noqa: E402

K_DONE, K_FIRST_START, K_LAST = "bench:done", "bench:first_start", "bench:last"
_HARNESS = {
    "get",
    "set",
    "incrby",
    "rpush",
    "config|resetstat",
    "info",
    "ping",
    "flushall",
    "client|setinfo",
    "client|setname",
    "select",
    "hello",
}


def out(msg: str = "") -> None:
    print(msg, flush=True)


# -- 1. enqueue ladder ----------------------------------------------------------------------


async def ladder(url: str, n: int, repeats: int, cprof: Path | None) -> None:
    os.environ["AIOQ_REDIS_URL"] = url
    import bench_tasks as bt

    from aioq.scripts import ENQUEUE

    bt.app.rebind(redis_url=url)
    plain = aredis.from_url(url)
    app, noop = bt.app, bt.noop
    await app.ping()
    keys = app.keys()
    sha_one = await plain.script_load("return 1")
    sha_enq = await plain.script_load(ENQUEUE)
    fields = noop.call().prepare()[1][1:]  # the enqueue script's values after the job id
    scripts = app.scripts
    job, stream, sched = keys.job_prefix, keys.stream, keys.scheduled
    ctr = iter(range(10**9))

    def jid() -> str:
        return f"p{next(ctr)}"

    def ev_plain() -> Awaitable[Any]:
        j = jid()
        return plain.evalsha(sha_enq, 3, stream, sched, job + j, j, *fields)

    def ev_app() -> Awaitable[Any]:
        j = jid()
        return app.redis.evalsha(sha_enq, 3, stream, sched, job + j, j, *fields)

    import hiredis
    from redis.asyncio import ConnectionPool

    pool = ConnectionPool.from_url(url)
    conn1 = pool.make_connection()
    await conn1.connect()

    async def lean_pool() -> Any:  # what aioq could do: no redis-py command machinery
        j = jid()
        packed = hiredis.pack_command(("EVALSHA", sha_enq, 3, stream, sched, job + j, j, *fields))
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(packed, check_health=False)
            return await conn.read_response()
        finally:
            await pool.release(conn)

    async def lean_conn() -> Any:
        j = jid()
        packed = hiredis.pack_command(("EVALSHA", sha_enq, 3, stream, sched, job + j, j, *fields))
        await conn1.send_packed_command(packed, check_health=False)
        return await conn1.read_response()

    steps: list[tuple[str, Callable[[], Awaitable[Any]], str]] = [
        ("xadd-plain", lambda: plain.xadd("raw:tasks", {"t": "noop", "i": 1}), "xadd"),
        ("xadd-app", lambda: app.redis.xadd("raw:tasks", {"t": "noop", "i": 1}), "xadd"),
        ("evalsha-return1", lambda: plain.evalsha(sha_one, 0), "evalsha"),
        ("evalsha-enqueue", ev_plain, "evalsha"),
        ("evalsha-app", ev_app, "evalsha"),
        ("scripts.enqueue", lambda: scripts.enqueue([(keys, [[jid(), *fields]])]), "evalsha"),
        ("task.enqueue", lambda: noop.enqueue(), "evalsha"),
        ("lean-pool", lean_pool, "evalsha"),
        ("lean-conn", lean_conn, "evalsha"),
    ]
    wall: dict[str, list[float]] = collections.defaultdict(list)
    cpu: dict[str, list[float]] = collections.defaultdict(list)
    srv: dict[str, list[float]] = collections.defaultdict(list)
    for rep in range(repeats):
        for name, fn, cmd in steps if rep % 2 else steps[::-1]:
            await plain.flushall()
            await plain.config_resetstat()
            for _ in range(50):
                await fn()
            await plain.config_resetstat()
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                await fn()
            t1, c1 = time.perf_counter(), time.process_time()
            st = await plain.info("commandstats")
            wall[name].append((t1 - t0) / n * 1e6)
            cpu[name].append((c1 - c0) / n * 1e6)
            srv[name].append(float(st[f"cmdstat_{cmd}"]["usec_per_call"]))
    out(f"enqueue ladder: {n} awaited calls per step, {repeats} interleaved repeats, medians")
    out(
        f"{'step':18} {'us/call':>8} {'delta':>7} {'client CPU us':>14} {'redis us':>9} "
        f"{'/s':>7} {'xadd-plain/this':>15}"
    )
    prev = None
    base = statistics.median(wall["xadd-plain"])
    for name, _fn, _cmd in steps:
        w = statistics.median(wall[name])
        d = "" if prev is None or name.startswith("lean") else f"{w - prev:+7.1f}"
        out(
            f"{name:18} {w:8.1f} {d:>7} {statistics.median(cpu[name]):14.1f} "
            f"{statistics.median(srv[name]):9.2f} {1e6 / w:7.0f} {base / w:15.2f}"
        )
        prev = w
    out()
    # CPU of the pure-Python parts, no I/O
    m = 20_000
    t0 = time.perf_counter()
    for _ in range(m):
        noop.call().prepare()
    prep = (time.perf_counter() - t0) / m * 1e6
    import uuid

    t0 = time.perf_counter()
    for _ in range(m):
        uuid.uuid4().hex  # noqa: B018
    u = (time.perf_counter() - t0) / m * 1e6
    t0 = time.perf_counter()
    for _ in range(m):
        noop.check_arguments((), {})
    sig = (time.perf_counter() - t0) / m * 1e6
    out(f"pure CPU: Call.prepare {prep:.1f} us (of which uuid4().hex {u:.1f} us, "
        f"signature.bind {sig:.1f} us)")  # fmt: skip
    if cprof is not None:
        await plain.flushall()
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(n):
            await noop.enqueue()
        pr.disable()
        pr.dump_stats(cprof)
        out(f"\ncProfile of {n} x await noop.enqueue() (tottime, top 25) -> {cprof}")
        pstats.Stats(pr).sort_stats("tottime").print_stats(25)
    await conn1.disconnect()
    await pool.aclose()
    await app.aclose()
    await plain.aclose()


# -- 2. drain accounting --------------------------------------------------------------------


def spawn(cmd: list[str], env: dict[str, str], logfile: Path) -> subprocess.Popen[bytes]:
    with open(logfile, "ab") as lf:
        return subprocess.Popen(
            cmd, cwd=HERE, env={**os.environ, **env}, stdout=lf, stderr=subprocess.STDOUT
        )


async def redis_cpu(r: aredis.Redis) -> float:
    st = await r.info("cpu")
    return float(st["used_cpu_sys"]) + float(st["used_cpu_user"])


async def drain(url: str, impl: str, n: int, conc: int, prefix: list[str], env: dict[str, str],
                logdir: Path) -> dict[str, Any]:  # fmt: skip
    import bench_tasks as bt

    r = aredis.from_url(url)
    await r.flushall()
    if impl == "aioq":
        await bt.app.enqueue_many([bt.noop.call() for _ in range(n)])
        cmd = [sys.executable, "-m", "aioq", "worker", "bench_tasks:app",
               "--concurrency", str(conc), "--log-level", "warning"]  # fmt: skip
        cmd = prefix + cmd
    else:
        async with r.pipeline(transaction=False) as p:
            for i in range(n):
                p.xadd("raw:tasks", {"t": "noop", "i": i})
            await p.execute()
        cmd = [sys.executable, str(HERE / "raw_worker.py"), "--concurrency", str(conc)]
    await r.config_resetstat()
    cpu0 = await redis_cpu(r)
    t_spawn = time.time()
    p = spawn(cmd, env, logdir / f"{impl}.log")
    deadline = time.monotonic() + 300
    while True:
        v = await r.get(K_DONE)
        if v and int(v) >= n:
            break
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{impl} worker failed: {v}/{n} done")
        await asyncio.sleep(0.01)
    cpu1 = await redis_cpu(r)
    st = await r.info("commandstats")
    first = float(await r.get(K_FIRST_START) or 0)
    last = float(await r.get(K_LAST) or 0)
    p.send_signal(signal.SIGINT if prefix else signal.SIGTERM)
    _, status, ru = await asyncio.to_thread(os.wait4, p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    await r.aclose()
    calls = {k[8:]: v for k, v in st.items() if k.startswith("cmdstat_")}
    ev = calls.get("evalsha", {"calls": 0, "usec": 0})
    xr = calls.get("xreadgroup", {"calls": 0, "usec": 0})
    return {
        "impl": impl,
        "steady": n / (last - first),
        "startup": first - t_spawn,
        "wall": last - t_spawn,
        "worker_cpu": ru.ru_utime + ru.ru_stime,
        "worker_utime": ru.ru_utime,
        "worker_stime": ru.ru_stime,
        "redis_cpu_window": cpu1 - cpu0,
        "evalsha_calls": ev["calls"],
        "evalsha_usec": ev["usec"],
        "xreadgroup_calls": xr["calls"],
        "calls": calls,
        "n": n,
    }


def show_drain(d: dict[str, Any]) -> None:
    n = d["n"]
    steady_window = n / d["steady"]
    out(
        f"{d['impl']:>4}: {d['steady']:,.0f} jobs/s excl. start-up ({steady_window:.2f} s), "
        f"start-up {d['startup']:.3f} s"
    )
    out(
        f"      worker process CPU {d['worker_cpu']:.2f} s over its whole life (user "
        f"{d['worker_utime']:.2f}, sys {d['worker_stime']:.2f}) = "
        f"{d['worker_cpu'] / n * 1e6:.1f} us/job incl. start-up and stop"
    )
    out(
        f"      redis-server CPU {d['redis_cpu_window']:.2f} s from spawn to last job "
        f"({d['redis_cpu_window'] / n * 1e6:.1f} us/job)"
    )
    calls = d["calls"]
    inner = {k: v for k, v in calls.items() if k not in _HARNESS and k != "evalsha"}
    out("      redis time per job by command (commands run inside Lua are counted too):")
    for k, v in sorted(inner.items(), key=lambda kv: -kv[1]["usec"]):
        if v["usec"] / n >= 0.05:
            out(
                f"        {k:12} {v['calls']:>7} calls  {v['usec'] / n:6.2f} us/job  "
                f"({v['usec'] / v['calls']:.2f} us/call)"
            )
    if "evalsha" in calls:
        ev = calls["evalsha"]["usec"]
        lua_inner = sum(v["usec"] for k, v in inner.items() if k not in ("xreadgroup", "xack"))
        out(
            f"        evalsha total {ev / n:.2f} us/job, of which the commands it ran "
            f"~{lua_inner / n:.2f} and Lua itself ~{(ev - lua_inner) / n:.2f} us/job"
        )
    if d["evalsha_calls"]:
        out(
            f"      EVALSHA calls {d['evalsha_calls']} -> {n / d['evalsha_calls']:.1f} jobs per "
            f"script call on average (fetch + complete, plus ping/promote/etc.)"
        )


def summarize_pyspy(path: Path, top: int = 30) -> None:
    """Self time per frame, and inclusive time per aioq function, from folded stacks."""
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = skipped = 0
    for line in path.read_text().splitlines():
        stack, _, cnt = line.rpartition(" ")
        if not cnt.isdigit():
            continue
        c = int(cnt)
        frames = stack.split(";")
        if not any("_run_once" in f for f in frames) or any("_find_and_load" in f for f in frames):
            skipped += c
            continue
        total += c
        self_t[_short(frames[-1])] += c
        for f in set(frames):
            if "aioq/" in f or "bench_" in f:
                incl[_short(f)] += c
    if not total:
        out("py-spy: no samples")
        return
    out(
        f"py-spy: {total} samples inside the event loop ({skipped} outside it or importing, "
        "i.e. start-up, left out)"
    )
    out(f"  self time, top {top}:")
    for f, c in self_t.most_common(top):
        out(f"    {100 * c / total:5.1f}%  {f}")
    out("  inclusive time of aioq's own frames:")
    for f, c in incl.most_common(top):
        out(f"    {100 * c / total:5.1f}%  {f}")


def _short(frame: str) -> str:
    frame = re.sub(r"/[^ (]*/site-packages/", "", frame)
    frame = re.sub(r"/[^ (]*/lib/python3\.\d+/", "", frame)
    return frame.replace(str(HERE.parent) + "/", "")


async def drains(url: str, args: argparse.Namespace) -> None:
    out(f"\ndrain accounting: {args.n} queued no-op jobs, one worker, concurrency {args.conc}")
    outdir = Path(args.out)
    env = {"AIOQ_REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
    for impl in ("raw", "aioq"):
        base = await drain(url, impl, 1, args.conc, [], env, outdir)
        d = await drain(url, impl, args.n, args.conc, [], env, outdir)
        show_drain(d)
        per_job = (d["worker_cpu"] - base["worker_cpu"]) / (args.n - 1) * 1e6
        out(
            f"      worker CPU with 1 job (start-up + stop): {base['worker_cpu']:.2f} s, so "
            f"{per_job:.1f} us of worker CPU per job; "
            f"{d['worker_cpu'] - base['worker_cpu']:.2f} s over a {args.n / d['steady']:.2f} s "
            f"drain = {(d['worker_cpu'] - base['worker_cpu']) * d['steady'] / args.n:.0%} "
            "of one core"
        )
    if args.py_spy:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        folded = outdir / "worker.pyspy.txt"
        prefix = [spy, "record", "-r", str(args.rate), "-f", "raw", "-o", str(folded), "--"]
        out(f"\naioq worker under py-spy ({args.rate} Hz), {args.n_spy} jobs -> {folded}")
        show_drain(await drain(url, "aioq", args.n_spy, args.conc, prefix, env, outdir))
        summarize_pyspy(folded)
    if args.cprofile:
        prof = outdir / "worker.cprofile"
        prof.unlink(missing_ok=True)
        out(f"\naioq worker under cProfile from its first job on (slows it down) -> {prof}")
        show_drain(await drain(url, "aioq", args.n, args.conc, [],
                               {**env, "BENCH_CPROFILE": str(prof)}, outdir))  # fmt: skip
        for _ in range(100):
            if prof.exists():
                break
            await asyncio.sleep(0.05)
        st = pstats.Stats(str(prof))
        st.sort_stats("tottime").print_stats(35)
        st.sort_stats("cumulative").print_stats(r"aioq/", 30)


# -- 3. worker CPU per job without Redis ----------------------------------------------------


async def micro(url: str, batch: int = 100, rounds: int = 200) -> None:
    """Runner.start + Runner._run + Completer.add on fake fetch rows, and the pieces of it."""
    import bench_tasks as bt
    import hiredis
    from redis.asyncio.connection import Connection

    from aioq.context import JobContext, _current
    from aioq.message import parse_delivery
    from aioq.worker import Worker

    app = bt.app
    w = Worker(app, concurrency=10**9)
    keys = app.keys()
    n = batch * rounds

    def rows() -> list[list[Any]]:
        return [
            [b"1700000000000-%d" % i, os.urandom(16).hex().encode(), 1, b"noop", b"[]", b"{}",
             b"", b"0", 0, None]
            for i in range(batch)
        ]  # fmt: skip

    batches = [rows() for _ in range(rounds)]
    res: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(5):
        t0 = time.perf_counter()
        for b in batches:
            w.runner.start(keys, b)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            w.completer._buffers.clear()
        res["runner"].append((time.perf_counter() - t0) / n * 1e6)

        async def noop() -> None:
            bt.rec.started()
            bt.rec.done()

        acks: list[bytes] = []
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        for b in batches:
            for row in b:
                t = loop.create_task(noop())
                t.add_done_callback(lambda t, m=row[0], a=acks: a.append(m))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            acks.clear()
        res["raw"].append((time.perf_counter() - t0) / n * 1e6)
        flat = [row for b in batches for row in b]
        t0 = time.perf_counter()
        for row in flat:
            parse_delivery(row)
        res["parse"].append((time.perf_counter() - t0) / n * 1e6)
        t0 = time.perf_counter()
        for _ in range(n):
            app.redis  # noqa: B018
        res["app.redis"].append((time.perf_counter() - t0) / n * 1e6)
        red = app.redis
        t0 = time.perf_counter()
        for _ in range(n):
            _current.reset(_current.set(JobContext(red, keys, "x", "noop", 1)))
        res["context"].append((time.perf_counter() - t0) / n * 1e6)
        recs = [("ok", r[0], r[1].decode(), 1, b"null", "", "", 0) for r in flat[:batch]]
        head = ("EVALSHA", "a" * 40, 3, keys.stream, keys.dead, keys.scheduled,
                *w.script_args.args)  # fmt: skip
        c = Connection()
        t0 = time.perf_counter()
        for _ in range(rounds):
            args: list[Any] = []
            for rec in recs:
                args.extend(rec)
            c.pack_command(*head, *args)
        res["pack"].append((time.perf_counter() - t0) / n * 1e6)
        t0 = time.perf_counter()
        for _ in range(rounds):
            args = []
            for rec in recs:
                args.extend(rec)
            hiredis.pack_command((*head, *args))
        res["hpack"].append((time.perf_counter() - t0) / n * 1e6)
    m = {k: statistics.median(v) for k, v in res.items()}
    out(f"\nworker CPU per job without Redis (batches of {batch}, median of 5):")
    out(f"  Runner.start + _run + Completer.add (aioq)          {m['runner']:5.2f} us/job")
    out(f"  create_task + noop + done callback (raw worker)     {m['raw']:5.2f} us/job")
    out(f"  of aioq's: parse_delivery                           {m['parse']:5.2f} us/job")
    out(f"           app.redis (App._connection lookup)         {m['app.redis']:5.2f} us/job")
    out(f"           JobContext + contextvar set/reset          {m['context']:5.2f} us/job")
    out(f"  COMPLETE args + redis-py pack_command (8 per job)   {m['pack']:5.2f} us/job")
    out(f"  the same with hiredis.pack_command                  {m['hpack']:5.2f} us/job")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--unix", action="store_true", help="redis on a unix socket")
    ap.add_argument("--n", type=int, default=20_000, help="jobs for the drain")
    ap.add_argument("--n-ladder", type=int, default=2_000, help="calls per ladder step")
    ap.add_argument("--repeats", type=int, default=5, help="ladder repeats")
    ap.add_argument("--conc", type=int, default=100)
    ap.add_argument("--py-spy", action="store_true", help="profile the worker with py-spy")
    ap.add_argument("--rate", type=int, default=500, help="py-spy sampling rate (Hz)")
    ap.add_argument("--n-spy", type=int, default=60_000, help="jobs for the py-spy drain")
    ap.add_argument("--cprofile", action="store_true", help="cProfile enqueue and the worker")
    ap.add_argument("--skip-ladder", action="store_true")
    ap.add_argument("--skip-drain", action="store_true")
    ap.add_argument("--skip-micro", action="store_true")
    ap.add_argument("--out", default="/tmp/aioq-profile", help="where profiles are written")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with redis_server("unix" if args.unix else "tcp", None) as url:
        os.environ["AIOQ_REDIS_URL"] = url
        out(f"redis at {url}")

        async def go() -> None:
            import bench_tasks as bt

            bt.app.rebind(redis_url=url)
            if not args.skip_ladder:
                cp = Path(args.out) / "enqueue.cprofile" if args.cprofile else None
                await ladder(url, args.n_ladder, args.repeats, cp)
            if not args.skip_micro:
                await micro(url)
            if not args.skip_drain:
                await drains(url, args)
            await bt.app.aclose()

        asyncio.run(go())
    return 0


if __name__ == "__main__":
    sys.exit(main())
