"""Workflows against plain jobs in one run: a chord's members drain against plain jobs, the
chord's callback start, and a chain's hand-over against a plain job's enqueue -> start.

    .venv/bin/python benchmarks/bench_workflows.py              # 10,000 jobs, 1,000 steps, 3 reps
    .venv/bin/python benchmarks/bench_workflows.py --quick      # 2,000 jobs, 300 steps

Starts its own redis-server (TCP loopback, as ``bench_worker.py``; ``--redis-url`` to use a
running one, which is FLUSHALL'd). Every figure comes from the times Redis wrote into the job
records (``enqueued_at``, ``started_at``, ``finished_at``: epoch ms, Redis' clock), read after
the run, so the harness's own timing does not enter them. The worker is a subprocess:

  cli   ``python -m aioq worker bench_tasks:app`` as users run it (its defaults: concurrency
        100, ``--log-level info``), ``--burst`` for the drains
  api   ``python api_worker.py``: ``Worker(app)`` through the API, no logging configured

Every repeat runs, for each worker (order rotated):

  drain   N no-op jobs queued (``enqueue_many``), then a burst worker, vs a chord of N no-op
          members and a callback (``chord([noop.s()] * N, collect.s())``, enqueued before the
          worker starts), then a burst worker; order alternated. Rate = N / (first
          ``started_at`` .. last ``finished_at``) of the N jobs (the members).
          ratio = members' rate / plain rate (target >= 0.75).
          callback = the callback's ``started_at`` - the members' last ``finished_at``
          (target <= 50 ms).
  latency an idle worker (not burst), warmed up; then M single jobs, each enqueued once the one
          before finished (after a random 0-2 ms pause, so the ms clock's phase is random),
          then a chain of M steps (``chain(relay.s(), relay.s(), ...)``, each passing its
          result on), measured two ways:
            Redis times  enqueue -> start = ``started_at - enqueued_at``; hand-over = step n's
                         ``started_at`` - step n-1's ``finished_at``. In whole ms: both p50s
                         are 0 or 1 here, so the mean of the differences is printed too (each
                         difference of two ms clocks is off by less than 1 ms either way,
                         evenly, so the mean is not rounded).
            tasks' clocks  ``time.time()`` before the enqueue call -> the task's first line,
                         vs a step's first line -> the next step's (both ``bench_record.lat``).
          ratio = hand-over / enqueue -> start, per repeat (target p50 <= 2x).

Prints versions and a table of medians (min-max) over the repeats; ``--json PATH`` writes every
single run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import as_installed  # before redis: compiled bytecode, no OpenTelemetry (see there)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import redis.asyncio as aredis  # noqa: E402
from bench_core import med, pct, redis_server, versions  # noqa: E402
from bench_worker import _table  # noqa: E402

from aioq import chain, chord  # noqa: E402
from aioq.scripts import Scripts  # noqa: E402

SCRIPT_NAMES = {  # SHA -> the script's name, as Scripts holds them (_flow: "flow", ...)
    v.sha: k.lstrip("_")
    for k, v in vars(Scripts(None)).items()
    if hasattr(v, "sha")  # type: ignore[arg-type]
}

K_LAT = "bench:lat"  # bench_record.K_LAT: "i start" of each latency task
K_FIRST_START = "bench:first_start"  # bench_record.K_FIRST_START: the first task's start
VARIANTS = ("cli", "api")
LABELS = {"cli": "aioq worker (defaults)", "api": "Worker(app) through the API"}
READ_CHUNK = 2_000  # job records read per pipeline


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


T0 = time.monotonic()


class Bench:
    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.url, self.args = url, args
        self.r = aredis.from_url(url)
        os.environ["AIOQ_REDIS_URL"] = url
        import bench_tasks

        bench_tasks.app.rebind(redis_url=url)
        self.bt = bench_tasks
        self.app = bench_tasks.app
        self.env = as_installed.child_env(
            {**os.environ, "AIOQ_REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
        )
        self.logdir = Path(tempfile.mkdtemp(prefix="aioq-bench-workflows-"))
        self.runs: list[dict[str, Any]] = []

    def cmd(self, variant: str, burst: bool) -> list[str]:
        b = ["--burst"] if burst else []
        if variant == "cli":
            return [sys.executable, "-m", "aioq", "worker", "bench_tasks:app", *b]
        return [sys.executable, str(HERE / "api_worker.py"), *b]

    async def spawn(self, variant: str, burst: bool, tag: str) -> asyncio.subprocess.Process:
        with open(self.logdir / f"{tag}.log", "ab") as out:  # noqa: ASYNC230 - before timing
            return await asyncio.create_subprocess_exec(
                *self.cmd(variant, burst), cwd=HERE, env=self.env, stdout=out, stderr=out
            )

    async def stop(self, p: asyncio.subprocess.Process) -> None:
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(p.wait(), 15)
            except TimeoutError:
                p.kill()
                await p.wait()

    async def times(self, queue: str, ids: list[str], *fields: str) -> list[list[int]]:
        """``fields`` (epoch ms) of each job, in order; a missing one is an error."""
        keys = self.app.keys(queue)
        out: list[list[int]] = []
        for i in range(0, len(ids), READ_CHUNK):
            async with self.r.pipeline(transaction=False) as pipe:
                for jid in ids[i : i + READ_CHUNK]:
                    pipe.hmget(keys.job(jid), fields)
                for jid, row in zip(ids[i : i + READ_CHUNK], await pipe.execute(), strict=True):
                    if any(v is None for v in row):
                        raise RuntimeError(f"job {jid} has no {fields}: {row}")
                    out.append([int(v) for v in row])
        return out

    async def steps(self, flow_id: str) -> list[list[str]]:
        raw = await self.r.hget(self.app.keys("default").flow(flow_id), "steps")
        return json.loads(raw)  # type: ignore[no-any-return]

    async def burst(self, variant: str, tag: str, n: int) -> dict[str, Any]:
        """Run a burst worker to the end; what it cost per job: the worker's CPU and Redis'
        (µs), and Redis' calls of each command per 1,000 jobs (INFO commandstats)."""
        await self.r.config_resetstat()
        if self.args.profile:  # every command into the slow log, with its time in µs
            await self.r.config_set("slowlog-max-len", 1_000_000)
            await self.r.config_set("slowlog-log-slower-than", 0)
            await self.r.slowlog_reset()
        cpu0, redis0 = _children_cpu(), await self._redis_cpu()
        p = await self.spawn(variant, True, tag)
        try:
            # the worker's CPU when its first job started (bench_record writes that time
            # within 10 ms): what it spent starting up is left out of its CPU per job
            at_start = None
            while p.returncode is None and at_start is None:
                if await self.r.exists(K_FIRST_START):
                    at_start = _process_cpu(p.pid)
                else:
                    await asyncio.sleep(0.002)
            rc = await asyncio.wait_for(p.wait(), 300)
        finally:
            await self.stop(p)
        if rc != 0:
            raise RuntimeError(f"{tag}: exit code {rc} (log in {self.logdir})")
        cpu1, redis1 = _children_cpu(), await self._redis_cpu()
        stats = await self.r.info("commandstats")
        scripts = await self._slowlog(n) if self.args.profile else {}
        return {
            "scripts": scripts,
            "worker_us": (cpu1 - cpu0 - (at_start or 0.0)) / n * 1e6,
            "redis_us": (redis1 - redis0) / n * 1e6,
            "calls": {k.removeprefix("cmdstat_"): v["calls"] / n * 1000 for k, v in stats.items()},
            "evalsha_us": stats.get("cmdstat_evalsha", {}).get("usec", 0) / n,
        }  # fmt: skip

    async def _slowlog(self, n: int) -> dict[str, dict[str, float]]:
        """Per script (by name) and other command: calls per 1,000 jobs, µs per call and per
        job, read from the slow log (threshold 0: every command; EVALSHA by its SHA)."""
        await self.r.config_set("slowlog-log-slower-than", 10_000)
        entries = await self.r.slowlog_get(-1)
        await self.r.slowlog_reset()
        totals: dict[str, list[float]] = {}
        for e in entries:
            cmd = e["command"].split()
            name = cmd[0].decode().lower() if cmd else "?"
            if name == "evalsha" and len(cmd) > 1:
                name = SCRIPT_NAMES.get(cmd[1].decode(), "evalsha " + cmd[1].decode()[:8])
            t = totals.setdefault(name, [0, 0])
            t[0] += 1
            t[1] += e["duration"]
        return {
            k: {"per_1000": c / n * 1000, "us_call": us / c, "us_job": us / n}
            for k, (c, us) in totals.items()
        }

    async def _redis_cpu(self) -> float:
        cpu = await self.r.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    # -- drain: plain jobs vs a chord's members ----------------------------------------------

    async def drain_plain(self, variant: str, rep: int) -> None:
        n, noop = self.args.n, self.bt.noop
        await self.r.flushall()
        ids: list[str] = []
        for i in range(0, n, 10_000):
            jobs = await self.app.enqueue_many([noop.call() for _ in range(min(10_000, n - i))])
            ids += [j.id for j in jobs]
        cost = await self.burst(variant, f"plain.{variant}.r{rep}", n)
        t = await self.times("default", ids, "started_at", "finished_at")
        span = max(f for _, f in t) - min(s for s, _ in t)
        rec = {"variant": variant, "scenario": "plain", "rep": rep, "rate": n / span * 1000, **cost}
        self.runs.append(rec)
        log(f"rep {rep} {variant:>3} drain of {n:,} plain jobs: {rec['rate']:>8,.0f} jobs/s")

    async def drain_chord(self, variant: str, rep: int) -> None:
        n, noop, collect = self.args.n, self.bt.noop, self.bt.collect
        await self.r.flushall()
        t0 = time.perf_counter()
        job = await chord([noop.s() for _ in range(n)], collect.s()).enqueue()
        enqueue_s = time.perf_counter() - t0
        info = await job.info()
        members = [jid for q, jid, task in await self.steps(info.workflow or "") if task == "noop"]
        assert len(members) == n, len(members)
        cost = await self.burst(variant, f"chord.{variant}.r{rep}", n)
        if await job.result(timeout=10) != n:
            raise RuntimeError("the chord's callback did not get every member's result")
        t = await self.times("default", members, "started_at", "finished_at")
        last = max(f for _, f in t)
        [[cb_start]] = await self.times("default", [job.id], "started_at")
        rec = {
            "variant": variant, "scenario": "chord", "rep": rep,
            "rate": n / (last - min(s for s, _ in t)) * 1000,
            "callback_ms": cb_start - last, "enqueue_s": enqueue_s, **cost,
        }  # fmt: skip
        self.runs.append(rec)
        log(
            f"rep {rep} {variant:>3} chord of {n:,}: members {rec['rate']:>8,.0f} jobs/s, "
            f"callback started {rec['callback_ms']} ms after the last member finished "
            f"(enqueued in {enqueue_s:.2f} s)"
        )

    # -- latency: a plain job's enqueue -> start vs a chain's hand-over -----------------------

    async def latency(self, variant: str, rep: int) -> None:
        m, lat, relay = self.args.m, self.bt.lat, self.bt.relay
        await self.r.flushall()
        p = await self.spawn(variant, False, f"latency.{variant}.r{rep}")
        try:
            for i in range(20):  # warm: started, connections open
                await (await lat.enqueue(-1 - i)).result(timeout=30)
            await self.recorded(20)
            singles, before = [], []
            for i in range(m):
                await asyncio.sleep(random.uniform(0, 0.002))
                before.append(time.time())
                job = await lat.enqueue(i)
                await job.result(timeout=30)
                singles.append(job.id)
            single_starts = await self.recorded(m)
            job = await chain(*(relay.s() for _ in range(m))).enqueue()
            if await job.result(timeout=120) != m:
                raise RuntimeError("the chain did not pass every result on")
            step_starts = await self.recorded(m)
        finally:
            await self.stop(p)
        plain = [
            s - e for e, s in await self.times("default", singles, "enqueued_at", "started_at")
        ]
        info = await job.info()
        ids = [jid for _, jid, _ in await self.steps(info.workflow or "")]
        t = await self.times("default", ids, "started_at", "finished_at")
        hand = [t[i][0] - t[i - 1][1] for i in range(1, len(t))]
        # the tasks' own clocks (µs): from before the enqueue call to the task's start, and
        # from a step's start to the next one's
        plain_us = [(single_starts[i] - before[i]) * 1000 for i in range(m)]
        step_us = [(step_starts[i] - step_starts[i - 1]) * 1000 for i in range(1, m)]
        rec = {
            "variant": variant, "scenario": "latency", "rep": rep,
            "plain_p50": pct(plain, 0.5), "plain_mean": statistics.fmean(plain),
            "hand_p50": pct(hand, 0.5), "hand_mean": statistics.fmean(hand),
            "client_p50": pct(plain_us, 0.5), "client_p90": pct(plain_us, 0.9),
            "step_p50": pct(step_us, 0.5), "step_p90": pct(step_us, 0.9),
            "chain_s": (t[-1][1] - t[0][0]) / 1000,
        }  # fmt: skip
        self.runs.append(rec)
        log(
            f"rep {rep} {variant:>3} Redis times: enqueue->start p50 {rec['plain_p50']:.0f} ms "
            f"(mean {rec['plain_mean']:.3f}), hand-over p50 {rec['hand_p50']:.0f} ms (mean "
            f"{rec['hand_mean']:.3f}); tasks' clocks: enqueue call->start p50 "
            f"{rec['client_p50']:.3f} ms, step->next step p50 {rec['step_p50']:.3f} ms; chain of "
            f"{m:,} in {rec['chain_s']:.2f} s"
        )

    async def recorded(self, n: int) -> dict[int, float]:
        """The start times the latency tasks recorded (bench_record.lat), by argument, once
        ``n`` are in (the worker flushes them every 10 ms); then they are cleared."""
        deadline = time.monotonic() + 10
        while await self.r.llen(K_LAT) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker recorded {await self.r.llen(K_LAT)} of {n} starts")
            await asyncio.sleep(0.01)
        raw = await self.r.lrange(K_LAT, 0, -1)
        await self.r.delete(K_LAT)
        out = {}
        for item in raw:
            i, t = item.split()[:2]
            out[int(i)] = float(t)
        return out

    async def run(self) -> None:
        sc = self.args.scenarios
        for rep in range(1, self.args.repeats + 1):
            k = (rep - 1) % len(VARIANTS)
            for v in VARIANTS[k:] + VARIANTS[:k]:
                if "drain" in sc:
                    pair = [self.drain_plain, self.drain_chord]
                    for step in pair if rep % 2 else pair[::-1]:
                        await step(v, rep)
                if "latency" in sc:
                    await self.latency(v, rep)
        await self.r.flushall()
        await self.app.aclose()
        await self.r.aclose()


def _process_cpu(pid: int) -> float:
    """CPU seconds a running process has used so far (/proc/PID/stat: utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the worker, once waited for)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def report(runs: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, str]) -> str:
    def runs_of(variant: str, scenario: str) -> dict[int, dict[str, Any]]:
        return {r["rep"]: r for r in runs if r["variant"] == variant and r["scenario"] == scenario}

    def cell(xs: list[float], f: str) -> str:
        return f"{med(xs):{f}} ({min(xs):{f}}-{max(xs):{f}})" if xs else "-"

    L = [
        f"aioq workflows benchmark: redis {info['redis-server']}, {args.repeats} repeats, "
        "median (min-max)",
        f"python {info['python']}, redis-py {info['redis-py']}, hiredis {info['hiredis']}, "
        f"aioq {info['aioq']}",
        f"machine: nproc {info['nproc']}, kernel {info['kernel']}, loadavg at start "
        f"{info['loadavg']}",
        "",
    ]
    if "drain" in args.scenarios:
        L.append(
            f"drain of {args.n:,} no-op jobs, --burst: plain vs a chord's members (jobs/s, Redis "
            "times); ratio per repeat (target >= 0.75); callback start after the last member "
            "(target <= 50 ms)"
        )
        rows = [("worker", "plain", "chord members", "ratio", "callback ms", "met")]
        for v in VARIANTS:
            plain, ch = runs_of(v, "plain"), runs_of(v, "chord")
            ratios = [ch[k]["rate"] / plain[k]["rate"] for k in ch if k in plain]
            cb = [float(r["callback_ms"]) for r in ch.values()]
            met = ratios and cb and med(ratios) >= 0.75 and med(cb) <= 50  # type: ignore[operator]
            rows.append((
                LABELS[v], cell([r["rate"] for r in plain.values()], ",.0f"),
                cell([r["rate"] for r in ch.values()], ",.0f"), cell(ratios, ".2f"),
                cell(cb, ".0f"), "yes" if met else "no",
            ))  # fmt: skip
        L.extend(_table(rows))
        L.append(
            "  where the time goes, per job: CPU of the worker (from its first job's start) and "
            "of redis-server (µs), the scripts' time in Redis (µs), Redis calls per 1,000 jobs"
        )
        rows = [("worker", "drain", "worker CPU", "Redis CPU", "EVALSHA µs", "EVALSHA",
                 "HMGET", "ZADD", "HSETNX", "ZREM")]  # fmt: skip
        for v in VARIANTS:
            for sc in ("plain", "chord"):
                rs = list(runs_of(v, sc).values())
                calls = [
                    cell([r["calls"].get(c, 0.0) for r in rs], ",.0f")
                    for c in ("evalsha", "hmget", "zadd", "hsetnx", "zrem")
                ]
                rows.append((
                    LABELS[v], sc, cell([r["worker_us"] for r in rs], ".0f"),
                    cell([r["redis_us"] for r in rs], ".0f"),
                    cell([r["evalsha_us"] for r in rs], ".1f"), *calls,
                ))  # fmt: skip
        L.extend(_table(rows))
        if args.profile:
            L.append(
                "  --profile, Redis' time per command (slow log; a script's includes the commands "
                "it runs, listed too): calls per 1,000 jobs, µs per call, µs per job"
            )
            rows = [("worker", "drain", "command", "per 1,000 jobs", "µs/call", "µs/job")]
            for v in VARIANTS:
                for sc in ("plain", "chord"):
                    rs = list(runs_of(v, sc).values())
                    names: set[str] = set().union(*(r["scripts"] for r in rs))
                    per_job = {k: med([r["scripts"].get(k, {}).get("us_job", 0.0) for r in rs])
                               for k in names}  # fmt: skip
                    for k in sorted(names, key=lambda k: -(per_job[k] or 0))[:8]:
                        got = [r["scripts"][k] for r in rs if k in r["scripts"]]
                        rows.append((
                            LABELS[v], sc, k, cell([g["per_1000"] for g in got], ",.1f"),
                            cell([g["us_call"] for g in got], ",.1f"),
                            cell([g["us_job"] for g in got], ".2f"),
                        ))  # fmt: skip
            L.extend(_table(rows))
        L.append("")
    if "latency" in args.scenarios:
        L.append(
            f"latency (ms): {args.m:,} single jobs' enqueue -> start vs a chain of {args.m:,} "
            "steps' hand-over; ratio per repeat (target p50 <= 2x)"
        )
        L.append(
            "  Redis times (whole ms): started_at - enqueued_at vs step n started_at - step n-1 "
            "finished_at"
        )
        rows = [("worker", "enqueue->start p50", "mean", "hand-over p50", "mean",
                 "ratio p50", "ratio mean", "met")]  # fmt: skip
        for v in VARIANTS:
            rs = list(runs_of(v, "latency").values())
            r50 = [r["hand_p50"] / r["plain_p50"] for r in rs if r["plain_p50"]]
            rmean = [r["hand_mean"] / r["plain_mean"] for r in rs if r["plain_mean"]]
            met = "yes" if r50 and med(r50) <= 2 else "no" if r50 else "- (p50 0 ms)"  # type: ignore[operator]
            rows.append((
                LABELS[v], cell([r["plain_p50"] for r in rs], ".0f"),
                cell([r["plain_mean"] for r in rs], ".3f"),
                cell([r["hand_p50"] for r in rs], ".0f"),
                cell([r["hand_mean"] for r in rs], ".3f"), cell(r50, ".2f"), cell(rmean, ".2f"),
                met,
            ))  # fmt: skip
        L.extend(_table(rows))
        L.append(
            "  the tasks' clocks (µs resolution): time.time() before the enqueue call -> the "
            "task's start vs a step's start -> the next step's start"
        )
        rows = [("worker", "enqueue call->start p50", "p90", "step->step p50", "p90",
                 "ratio p50", "met")]  # fmt: skip
        for v in VARIANTS:
            rs = list(runs_of(v, "latency").values())
            ratios = [r["step_p50"] / r["client_p50"] for r in rs]
            rows.append((
                LABELS[v], cell([r["client_p50"] for r in rs], ".3f"),
                cell([r["client_p90"] for r in rs], ".3f"),
                cell([r["step_p50"] for r in rs], ".3f"),
                cell([r["step_p90"] for r in rs], ".3f"), cell(ratios, ".2f"),
                "yes" if ratios and med(ratios) <= 2 else "no",  # type: ignore[operator]
            ))  # fmt: skip
        L.extend(_table(rows))
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 jobs, 300 steps")
    ap.add_argument("--redis-url", help="use this running Redis (it is FLUSHALL'd!)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, help="jobs per drain, members per chord (10,000; quick 2,000)")
    ap.add_argument("--m", type=int, help="single jobs and chain steps (1,000; quick 300)")
    ap.add_argument("--scenarios", default="drain,latency", help="drain, latency or both")
    ap.add_argument("--json", help="write every run (and versions) to this file")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="time every script of the drains in Redis (SLOWLOG at 0 µs: slows Redis a bit)",
    )
    args = ap.parse_args()
    args.n = args.n or (2_000 if args.quick else 10_000)
    args.m = args.m or (300 if args.quick else 1_000)
    args.scenarios = set(args.scenarios.split(","))
    with redis_server("tcp", args.redis_url) as url:
        info = versions(url)
        b = Bench(url, args)
        asyncio.run(b.run())
        log(f"worker logs in {b.logdir}")
    text = report(b.runs, args, info)
    print()
    print(text)
    if args.json:
        cmd = " ".join([Path(sys.executable).name, *sys.argv])
        Path(args.json).write_text(
            json.dumps({"command": cmd, "versions": info, "runs": b.runs}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
