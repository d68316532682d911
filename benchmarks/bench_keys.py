"""Flow control by key: what concurrency keys cost a drain, what jobs waiting on their keys
cost the unlimited jobs beside them, and the Redis memory a waiting job takes, in one run.

    .venv/bin/python benchmarks/bench_keys.py            # 20,000 jobs, 3 repeats (~1 min)
    .venv/bin/python benchmarks/bench_keys.py --quick    # 5,000 jobs, 2 repeats

Starts its own redis-server (TCP loopback, as ``bench_core.py``; ``--redis-url`` to use a
running one, which is FLUSHALL'd). Every worker is the default command, ``python -m aioq worker
bench_keys_tasks:app`` (concurrency 100, ``--log-level info`` to a file), in a subprocess.
Every repeat runs each variant once, order rotated:

  keys     N no-op jobs queued (``enqueue_many``), then one ``--burst`` worker until it exits
           (every stream and key list empty):
             plain      the jobs without a key
             keyed      the same task's jobs, job i with concurrency_key "k<i % K>" (K = 1,000
                        keys) and key_concurrency=2: 2,000 on the stream, the rest waiting in
                        their keys' lists, each job's end putting the next of its key on
             jobs/s = N / (first job start, recorded in the worker .. the process's exit,
             seen here), as bench_worker.py; ratio keyed / plain of the same repeat (target
             >= 0.7); Redis' time in the worker's scripts per job (INFO commandstats, reset
             before the worker starts), and the enqueue rate.
  mix      N unlimited no-op jobs queued, then one worker (not --burst: the held jobs never
           end; it is killed once the no-ops are done):
             alone      the no-ops only
             +waiting   W = 10,000 key-limited jobs enqueued first: 10 keys of
                        key_concurrency=1 whose first job sleeps for an hour, so 10 run (10 of
                        the worker's 100 slots) and 9,990 wait in their keys' lists
             +rate      W jobs of 10 keys limited to 1/h each (key_rate_limit only): 10 start
                        and end at once, 10 wait out the hour in the scheduled set, 9,980 wait
                        in the lists; no slot is held
             unlimited jobs/s = N / (first no-op start .. last no-op finish), both recorded in
             the worker; ratios +waiting / alone and +rate / alone (target >= 0.9); and
             Redis' time in scripts per no-op job (commandstats, as above; the start-up's
             and the key-limited jobs' scripts included).
  memory   W key-limited jobs enqueued (10 keys, key_concurrency=1: 9,990 waiting): INFO
           used_memory after - before, / W, next to W plain jobs queued (stream entry and
           record) as the reference; and MEMORY USAGE of one waiting job's record and of one
           key's list per member.

Every drain also reports redis-server's CPU per job (INFO cpu) and, in the mix, the worker's
(/proc): on this shared machine the rates swing with the other processes' load, the CPU per job
much less. ``BENCH_KEYS_STATS=1`` logs, per mix run, the commands Redis spent its time on.

Prints versions, machine, and medians (min-max) over the repeats. ``--json PATH`` writes every
single run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import as_installed  # before redis: compiled bytecode, no OpenTelemetry (see there)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import redis.asyncio as aredis  # noqa: E402
from bench_core import med, redis_server, versions  # noqa: E402

from aioq.message import member_job  # noqa: E402

K_DONE, K_FIRST_START, K_LAST = "bench:done", "bench:first_start", "bench:last"
KEYS = 1_000  # keys of the keyed drain
HELD_KEYS = 10  # keys of the waiting jobs (mix, memory)
CHUNK = 10_000  # jobs per enqueue_many


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


T0 = time.monotonic()


class Bench:
    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.url, self.args = url, args
        self.r = aredis.from_url(url)
        os.environ["AIOQ_REDIS_URL"] = url
        import bench_keys_tasks

        bench_keys_tasks.app.rebind(redis_url=url)
        self.t = bench_keys_tasks
        self.env = as_installed.child_env(
            {**os.environ, "AIOQ_REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
        )
        self.logdir = Path(tempfile.mkdtemp(prefix="aioq-bench-keys-"))
        self.runs: list[dict[str, Any]] = []

    async def spawn(self, tag: str, burst: bool) -> asyncio.subprocess.Process:
        cmd = [sys.executable, "-m", "aioq", "worker", "bench_keys_tasks:app"]
        with open(self.logdir / f"{tag}.log", "ab") as out:  # noqa: ASYNC230 - before timing
            return await asyncio.create_subprocess_exec(
                *cmd, *(["--burst"] if burst else []), cwd=HERE, env=self.env, stdout=out,
                stderr=out,
            )  # fmt: skip

    async def enqueue(self, calls: list[Any]) -> float:
        t0 = time.perf_counter()
        for i in range(0, len(calls), CHUNK):
            await self.t.app.enqueue_many(calls[i : i + CHUNK])
        return time.perf_counter() - t0

    async def redis_cpu(self) -> float:
        """redis-server's CPU seconds so far (user + system, INFO cpu)."""
        cpu = await self.r.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    async def measured(self, n: int) -> float:
        """jobs/s of the N measured jobs: first start to last finish, as the worker saw them."""
        first = float(await self.r.get(K_FIRST_START) or "nan")
        last = float(await self.r.get(K_LAST) or "nan")
        return n / (last - first)

    # -- keys -----------------------------------------------------------------------------

    async def keys(self, variant: str, rep: int) -> None:
        n = self.args.n
        await self.r.flushall()
        job = self.t.job
        if variant == "plain":
            calls = [job.call() for _ in range(n)]
        else:
            calls = [job.options(concurrency_key=f"k{i % KEYS}").call() for i in range(n)]
        took = await self.enqueue(calls)
        await self.r.config_resetstat()
        cpu0 = await self.redis_cpu()
        p = await self.spawn(f"keys.{variant}.r{rep}", burst=True)
        rc = await asyncio.wait_for(p.wait(), 300)
        t_exit = time.time()
        redis_us = (await self.redis_cpu() - cpu0) / n * 1e6
        keys = self.t.app.keys()
        left = await self.r.xlen(keys.stream) + await self.r.zcard(keys.keyed)
        if rc != 0 or left:
            raise RuntimeError(f"keys {variant}: exit code {rc}, {left} entries or keys left")
        # to the process's exit, as bench_worker.py: the last finishes may not be shipped yet
        rate = n / (t_exit - float(await self.r.get(K_FIRST_START) or "nan"))
        # Redis' own time in the worker's scripts per job (their commands included): what the
        # keys cost Redis, whatever the machine's other load does to the rates
        stats = await self.r.info("commandstats")
        script_us = stats.get("cmdstat_evalsha", {}).get("usec", 0) / n
        self.runs.append({"scenario": "keys", "variant": variant, "rep": rep, "rate": rate,
                          "enqueue": n / took, "script_us": script_us,
                          "redis_cpu_us": redis_us})  # fmt: skip
        log(
            f"rep {rep} keys {variant:>6}: {rate:>8,.0f} jobs/s, {script_us:.1f} us/job in "
            f"scripts, redis-server CPU {redis_us:.1f} us/job (enqueued at {n / took:,.0f}/s)"
        )

    # -- mix ------------------------------------------------------------------------------

    async def mix(self, variant: str, rep: int) -> None:
        n, w = self.args.n, self.args.w
        await self.r.flushall()
        t = self.t
        if variant != "alone":
            task = t.held if variant == "+waiting" else t.metered
            await self.enqueue([task.call(f"h{i % HELD_KEYS}") for i in range(w)])
        await self.enqueue([t.noop.call() for _ in range(n)])
        await self.r.config_resetstat()
        cpu0 = await self.redis_cpu()
        p = await self.spawn(f"mix.{variant}.r{rep}", burst=False)
        try:
            deadline = time.monotonic() + 300
            while int(await self.r.get(K_DONE) or 0) < n:
                if p.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mix {variant}: the worker ended or took too long")
                await asyncio.sleep(0.01)
            rate = await self.measured(n)
            redis_us = (await self.redis_cpu() - cpu0) / n * 1e6
            worker_us = _cpu_seconds(p.pid) / n * 1e6  # start-up included, as in every variant
            stats = await self.r.info("commandstats")
            script_us = stats.get("cmdstat_evalsha", {}).get("usec", 0) / n
            if os.environ.get("BENCH_KEYS_STATS"):  # which commands the Redis time went to
                top = sorted(stats.items(), key=lambda kv: -kv[1].get("usec", 0))[:12]
                log(
                    f"{variant}: "
                    + ", ".join(
                        f"{k[8:]} {v['calls'] / n:.2f}/job {v['usec'] / n:.2f}us" for k, v in top
                    )
                )
            waiting = 0
            if variant != "alone":
                keys = t.app.keys()
                groups: list[bytes] = await self.r.zrange(keys.keyed, 0, -1)  # type: ignore[assignment]
                for g in groups:
                    waiting += int(await self.r.llen(keys.keywait(g)))
        finally:
            p.send_signal(signal.SIGKILL)  # the held jobs sleep for an hour
            await p.wait()
        self.runs.append({"scenario": "mix", "variant": variant, "rep": rep, "rate": rate,
                          "waiting": waiting, "script_us": script_us, "redis_cpu_us": redis_us,
                          "worker_cpu_us": worker_us})  # fmt: skip
        extra = f", {waiting:,} still waiting on their keys" if variant != "alone" else ""
        log(
            f"rep {rep} mix {variant:>8}: {rate:>8,.0f} unlimited jobs/s, {script_us:.1f} us/job "
            f"in scripts{extra}"
        )

    # -- memory ---------------------------------------------------------------------------

    async def used_memory(self) -> int:
        return int((await self.r.info("memory"))["used_memory"])

    async def memory(self, rep: int) -> None:
        w, t = self.args.w, self.t
        keys = t.app.keys()
        await self.r.flushall()
        await self.enqueue([t.held.call("warm")])  # scripts loaded, not charged to the jobs
        await self.r.flushall()
        before = await self.used_memory()
        await self.enqueue([t.held.call(f"h{i % HELD_KEYS}") for i in range(w)])
        after = await self.used_memory()
        group: bytes = (await self.r.zrange(keys.keyed, 0, 0))[0]  # type: ignore[index]
        waiting_ids: list[bytes] = await self.r.lrange(keys.keywait(group), 0, 0)  # type: ignore[assignment]
        jid = member_job(waiting_ids[0])  # "<priority>:<places>:<job id>" (scripts/keyed.lua)
        record = await self.r.memory_usage(keys.job(jid)) or 0
        members = await self.r.llen(keys.keywait(group))
        per_member = (await self.r.memory_usage(keys.keywait(group), samples=0) or 0) / members
        await self.r.flushall()
        plain_before = await self.used_memory()
        await self.enqueue([t.noop.call() for _ in range(w)])
        plain = (await self.used_memory() - plain_before) / w
        per_job = (after - before) / w
        self.runs.append({"scenario": "memory", "rep": rep, "per_job": per_job, "plain": plain,
                          "record": record, "list_member": per_member})  # fmt: skip
        log(
            f"rep {rep} memory: {per_job:,.0f} B per waiting key-limited job (record {record} "
            f"B, list {per_member:,.1f} B/member); plain queued job {plain:,.0f} B"
        )

    async def run(self) -> None:
        sc = self.args.scenarios
        for rep in range(1, self.args.repeats + 1):
            if "keys" in sc:
                order = ["plain", "keyed"] if rep % 2 else ["keyed", "plain"]
                for v in order:
                    await self.keys(v, rep)
            if "mix" in sc:
                variants = ["alone", "+waiting", "+rate"]
                k = (rep - 1) % len(variants)
                for v in variants[k:] + variants[:k]:
                    await self.mix(v, rep)
            if "memory" in sc:
                await self.memory(rep)
        await self.r.flushall()
        await self.t.app.aclose()
        await self.r.aclose()


def report(runs: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, str]) -> str:
    def vals(scenario: str, variant: str | None, key: str) -> list[float]:
        return [
            r[key]
            for r in runs
            if r["scenario"] == scenario and (variant is None or r["variant"] == variant)
        ]

    def per_rep(scenario: str, variant: str) -> dict[int, float]:
        return {
            r["rep"]: r["rate"]
            for r in runs
            if r["scenario"] == scenario and r["variant"] == variant
        }

    def cell(xs: list[float], f: str) -> str:
        return f"{med(xs):{f}} ({min(xs):{f}}-{max(xs):{f}})" if xs else "-"

    def ratios(scenario: str, num: str, den: str) -> list[float]:
        a, b = per_rep(scenario, num), per_rep(scenario, den)
        return [a[rep] / b[rep] for rep in a if rep in b]

    L = [
        f"aioq flow control by key: redis {info['redis-server']}, {args.repeats} repeats, "
        "median (min-max)",
        f"python {info['python']}, redis-py {info['redis-py']}, hiredis {info['hiredis']}, "
        f"aioq {info['aioq']}",
        f"machine: nproc {info['nproc']}, kernel {info['kernel']}, loadavg at start "
        f"{info['loadavg']}",
        "",
    ]

    def row(label: str, value: str) -> str:
        return f"  {label:<38}{value}"

    def met(rs: list[float], target: float) -> str:
        m = med(rs)
        return "met" if m is not None and m >= target else "NOT met"

    def c(scenario: str, variant: str | None, key: str, f: str) -> str:
        return cell(vals(scenario, variant, key), f)

    if "keys" in args.scenarios:
        r = ratios("keys", "keyed", "plain")
        plain_us, keyed_us = (
            c("keys", "plain", "script_us", ".1f"),
            c("keys", "keyed", "script_us", ".1f"),
        )
        plain_enq, keyed_enq = (
            c("keys", "plain", "enqueue", ",.0f"),
            c("keys", "keyed", "enqueue", ",.0f"),
        )
        L += [
            f"keys: drain of {args.n:,} no-op jobs, default `aioq worker --burst` (jobs/s)",
            row("without keys", c("keys", "plain", "rate", ",.0f")),
            row(f"{KEYS:,} keys, key_concurrency=2", c("keys", "keyed", "rate", ",.0f")),
            row("ratio keyed / plain, per repeat", f"{cell(r, '.2f')}   >= 0.70: {met(r, 0.7)}"),
            row("Redis time in scripts per job", f"plain {plain_us} us, keyed {keyed_us} us"),
            row("redis-server CPU per job", f"plain {c('keys', 'plain', 'redis_cpu_us', '.1f')} "
                f"us, keyed {c('keys', 'keyed', 'redis_cpu_us', '.1f')} us"),
            row("enqueue_many", f"plain {plain_enq}/s, keyed {keyed_enq}/s"),
            "",
        ]  # fmt: skip
    if "mix" in args.scenarios:
        rw, rr = ratios("mix", "+waiting", "alone"), ratios("mix", "+rate", "alone")
        L += [
            f"mix: {args.n:,} unlimited no-op jobs (jobs/s), beside {args.w:,} key-limited "
            f"jobs of {HELD_KEYS} keys",
            row("alone", c("mix", "alone", "rate", ",.0f")),
            row("+waiting (key_concurrency=1, 10 run)",
                f"{c('mix', '+waiting', 'rate', ',.0f')}   ratio {cell(rw, '.2f')}"),
            row("+rate (key_rate_limit=1/h)",
                f"{c('mix', '+rate', 'rate', ',.0f')}   ratio {cell(rr, '.2f')}"),
            row("target >= 0.90", f"+waiting {met(rw, 0.9)}, +rate {met(rr, 0.9)}"),
            row("CPU per no-op job: redis-server",
                f"alone {c('mix', 'alone', 'redis_cpu_us', '.1f')} us, +waiting "
                f"{c('mix', '+waiting', 'redis_cpu_us', '.1f')}, +rate "
                f"{c('mix', '+rate', 'redis_cpu_us', '.1f')}"),
            row("CPU per no-op job: the worker",
                f"alone {c('mix', 'alone', 'worker_cpu_us', '.1f')} us, +waiting "
                f"{c('mix', '+waiting', 'worker_cpu_us', '.1f')}, +rate "
                f"{c('mix', '+rate', 'worker_cpu_us', '.1f')}"),
            row("Redis time in scripts per no-op job",
                f"alone {c('mix', 'alone', 'script_us', '.1f')} us, +waiting "
                f"{c('mix', '+waiting', 'script_us', '.1f')}, +rate "
                f"{c('mix', '+rate', 'script_us', '.1f')}"),
            "",
        ]  # fmt: skip
    if "memory" in args.scenarios:
        L += [
            f"memory: {args.w:,} key-limited jobs enqueued ({args.w - HELD_KEYS:,} waiting), "
            "INFO used_memory delta / jobs",
            row("per waiting key-limited job", f"{c('memory', None, 'per_job', ',.0f')} B"),
            row("per plain queued job (reference)", f"{c('memory', None, 'plain', ',.0f')} B"),
            row("of which one waiting job's record", f"{c('memory', None, 'record', ',.0f')} B, "
                f"its key's list {c('memory', None, 'list_member', ',.1f')} B/member"),
        ]  # fmt: skip
    return "\n".join(L)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5,000 jobs, 2 repeats")
    ap.add_argument("--redis-url", help="use this running Redis (it is FLUSHALL'd!)")
    ap.add_argument("--repeats", type=int, help="repeats (3; quick 2)")
    ap.add_argument("--n", type=int, help="measured jobs per run (20,000; quick 5,000)")
    ap.add_argument("--w", type=int, default=10_000, help="key-limited jobs waiting (10,000)")
    ap.add_argument("--scenarios", default="keys,mix,memory", help="keys, mix, memory")
    ap.add_argument("--json", help="write every run (and versions) to this file")
    args = ap.parse_args()
    args.n = args.n or (5_000 if args.quick else 20_000)
    args.repeats = args.repeats or (2 if args.quick else 3)
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
