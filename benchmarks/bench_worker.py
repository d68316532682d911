"""What a user's worker does: the default ``aioq worker`` command beside the same command with
logging off, with signed jobs, and the worker started through the API, an awaited job's round
trip against its floor, and the enqueue rates with and without signing, all in one run.

    .venv/bin/python benchmarks/bench_worker.py          # 20,000 jobs, 1,000 round trips, 3 reps
    .venv/bin/python benchmarks/bench_worker.py --quick  # 5,000 jobs, 300 round trips
    .venv/bin/python benchmarks/bench_worker.py --variants cli,cli-uvloop   # uvloop or not
    .venv/bin/python benchmarks/bench_worker.py --variants cli-quiet,signed \
        --scenarios drain,enqueue                        # signed jobs or not, enqueue rates

Starts its own redis-server (TCP loopback, as ``bench_core.py``; ``--redis-url`` to use a
running one, which is FLUSHALL'd). Every repeat runs each variant once, order rotated:

  drain      N no-op jobs queued (``enqueue_many``), then one worker subprocess with ``--burst``
             until it exits by itself:
               cli        ``python -m aioq worker bench_tasks:app --burst``  (its defaults:
                          ``--log-level info``, text logs to stderr, here to a file)
               cli-quiet  the same with ``--log-level warning`` (logging off)
               cli-uvloop the default command with ``--loop uvloop`` (only when asked for
                          with ``--variants``; the producer here stays on asyncio's loop)
               api        ``python api_worker.py --burst``: ``Worker(app, burst=True)`` in a
                          script that configures no logging (warnings only)
               signed     cli-quiet with ``App(signing_key=...)`` (BENCH_SIGNING_KEY): the
                          jobs were enqueued signed, the worker verifies each one
             jobs/s = N / (first job start .. process exit), i.e. excluding start-up (the
             first start is recorded in the worker, the exit seen by this process), and
             N / (spawn .. exit) including it.
  roundtrip  an idle worker (the same three commands without ``--burst``), warmed up; then M
             sequential ``job = await rpc.enqueue(); await job.result()`` from this process,
             each timed from before the enqueue to the result in hand; p50 and p90.
               floor      a raw redis-py XADD; ``raw_worker.py --rpc`` blocked in XREADGROUP
                          acknowledges the entry and PUBLISHes its id in one pipelined write;
                          one subscriber here, subscribed once, waits for that id
             ratio = the variant's p50 / the floor's p50 of the same repeat.

  enqueue    from this process, no worker: M sequential ``await noop.enqueue()``, N in
             ``enqueue_many`` batches of 10,000, and M sequential ``noop.enqueue_sync()`` (the
             blocking client, in a thread), each by an unsigned and a signed app (jobs/s).

Prints versions and a table of medians (min-max) over the repeats. ``--json PATH`` writes
every single run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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

K_FIRST_START = "bench:first_start"
RPC_STREAM, RPC_DONE = "raw:rpc", "raw:done"
VARIANTS = ("cli", "cli-quiet", "api")  # the default --variants
KNOWN = (*VARIANTS, "cli-uvloop", "signed")
SIGNING_KEY = b"bench-signing-key"
LABELS = {
    "cli": "aioq worker (defaults: --log-level info)",
    "cli-quiet": "aioq worker --log-level warning",
    "cli-uvloop": "aioq worker --loop uvloop",
    "api": "Worker(app) through the API",
    "signed": "aioq worker --log-level warning, signed jobs",
    "floor": "floor: raw XADD / XREADGROUP+XACK+PUBLISH",
}


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
        self.env = as_installed.child_env(
            {**os.environ, "AIOQ_REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
        )
        self.signed_env = {**self.env, "BENCH_SIGNING_KEY": SIGNING_KEY.decode()}
        from aioq import App

        self.signed = App("bench", redis_url=url, signing_key=SIGNING_KEY)

        @self.signed.task(name="noop")  # the same task, registered: the same enqueue path
        async def _noop() -> None:
            return None

        @self.signed.task(name="rpc")
        async def _rpc() -> None:
            return None

        self.signed_noop, self.signed_rpc = _noop, _rpc
        self.logdir = Path(tempfile.mkdtemp(prefix="aioq-bench-worker-"))
        self.runs: list[dict[str, Any]] = []

    def cmd(self, variant: str, burst: bool) -> list[str]:
        b = ["--burst"] if burst else []
        if variant == "cli":
            return [sys.executable, "-m", "aioq", "worker", "bench_tasks:app", *b]
        if variant in ("cli-quiet", "signed"):
            return [sys.executable, "-m", "aioq", "worker", "bench_tasks:app", *b,
                    "--log-level", "warning"]  # fmt: skip
        if variant == "cli-uvloop":
            return [sys.executable, "-m", "aioq", "worker", "bench_tasks:app", *b,
                    "--loop", "uvloop"]  # fmt: skip
        if variant == "api":
            return [sys.executable, str(HERE / "api_worker.py"), *b]
        return [sys.executable, str(HERE / "raw_worker.py"), "--rpc"]

    async def spawn(self, variant: str, burst: bool, tag: str) -> asyncio.subprocess.Process:
        with open(self.logdir / f"{tag}.log", "ab") as out:  # noqa: ASYNC230 - before timing
            env = self.signed_env if variant == "signed" else self.env
            return await asyncio.create_subprocess_exec(
                *self.cmd(variant, burst), cwd=HERE, env=env, stdout=out, stderr=out
            )

    async def stop(self, p: asyncio.subprocess.Process) -> None:
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(p.wait(), 15)
            except TimeoutError:
                p.kill()
                await p.wait()

    # -- drain ----------------------------------------------------------------------------

    async def drain(self, variant: str, rep: int) -> None:
        n = self.args.n
        await self.r.flushall()
        app, noop = self.bt.app, self.bt.noop
        call = self.signed_noop.call if variant == "signed" else noop.call
        for i in range(0, n, 10_000):
            await app.enqueue_many([call() for _ in range(min(10_000, n - i))])
        t_spawn = time.time()
        p = await self.spawn(variant, True, f"drain.{variant}.r{rep}")
        try:
            rc = await asyncio.wait_for(p.wait(), 300)
        finally:
            await self.stop(p)
        t_exit = time.time()
        first = float(await self.r.get(K_FIRST_START) or "nan")
        left = await self.r.xlen(app.keys().stream)
        dead = await self.r.xlen(app.keys().dead)
        if rc != 0 or left or dead:
            raise RuntimeError(f"{variant} drain: exit {rc}, {left} entries left, {dead} dead")
        rec = {
            "variant": variant, "scenario": "drain", "rep": rep,
            "steady": n / (t_exit - first), "total": n / (t_exit - t_spawn),
            "startup": first - t_spawn,
        }  # fmt: skip
        self.runs.append(rec)
        log(
            f"rep {rep} drain {variant:>9}: {rec['steady']:>8,.0f} jobs/s excl. start-up, "
            f"{rec['total']:,.0f} incl.; start-up {rec['startup']:.3f}s"
        )

    # -- round trip -----------------------------------------------------------------------

    async def roundtrip(self, variant: str, rep: int) -> None:
        m, warm = self.args.m, 50
        await self.r.flushall()
        p = await self.spawn(variant, False, f"rt.{variant}.r{rep}")
        try:
            if variant == "floor":
                times = await self._floor(m, warm)
            else:
                rpc = self.signed_rpc if variant == "signed" else self.bt.rpc
                times = []
                for i in range(warm + m):
                    t0 = time.perf_counter()
                    job = await rpc.enqueue()
                    await job.result(timeout=30)
                    if i >= warm:
                        times.append((time.perf_counter() - t0) * 1000)
        finally:
            await self.stop(p)
        rec = {
            "variant": variant, "scenario": "roundtrip", "rep": rep,
            "p50": pct(times, 0.5), "p90": pct(times, 0.9), "p99": pct(times, 0.99),
            "mean": statistics.fmean(times),
        }  # fmt: skip
        self.runs.append(rec)
        log(
            f"rep {rep} round trip {variant:>9}: p50 {rec['p50']:.3f} ms, p90 {rec['p90']:.3f}, "
            f"p99 {rec['p99']:.3f}"
        )

    # -- enqueue ----------------------------------------------------------------------------

    async def enqueue(self, rep: int) -> None:
        m, n = self.args.m, self.args.n
        pairs = [("unsigned", self.bt.app, self.bt.noop), ("signed", self.signed, self.signed_noop)]
        for label, app, noop in pairs if rep % 2 else pairs[::-1]:  # order alternates
            for _ in range(20):  # warm: the app's connections open outside the timing
                await noop.enqueue()
            await self.r.flushall()
            t0 = time.perf_counter()
            for _ in range(m):
                await noop.enqueue()
            seq = m / (time.perf_counter() - t0)
            await self.r.flushall()
            t0 = time.perf_counter()
            for i in range(0, n, 10_000):
                await app.enqueue_many([noop.call() for _ in range(min(10_000, n - i))])
            bulk = n / (time.perf_counter() - t0)
            await self.r.flushall()

            def blocking(noop: Any = noop) -> float:
                noop.enqueue_sync()  # the pool's first connection, outside the timing
                t0 = time.perf_counter()
                for _ in range(m):
                    noop.enqueue_sync()
                return m / (time.perf_counter() - t0)

            sync = await asyncio.to_thread(blocking)
            cpu = _cpu_per_job(app, noop)
            rec = {"variant": label, "scenario": "enqueue", "rep": rep,
                   "sequential": seq, "bulk": bulk, "sync": sync, **cpu}  # fmt: skip
            self.runs.append(rec)
            log(f"rep {rep} enqueue {label:>8}: {seq:,.0f}/s awaited, {bulk:,.0f}/s bulk, "
                f"{sync:,.0f}/s enqueue_sync")  # fmt: skip
        self.signed.close()
        self.bt.app.close()

    async def _floor(self, m: int, warm: int) -> list[float]:
        r = self.r
        pubsub: Any = r.pubsub()
        await pubsub.subscribe(RPC_DONE)
        while (await pubsub.get_message(timeout=5)) is None:  # the confirmation
            pass
        while not await r.exists(RPC_STREAM):  # noqa: ASYNC110 - the consumer made its group
            await asyncio.sleep(0.01)
        times: list[float] = []
        try:
            for i in range(warm + m):
                t0 = time.perf_counter()
                entry = await r.xadd(RPC_STREAM, {"i": i})
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=30)
                    if msg is None:
                        raise RuntimeError("floor: no notification in 30 s")
                    if msg["data"] == entry:
                        break
                if i >= warm:
                    times.append((time.perf_counter() - t0) * 1000)
        finally:
            await pubsub.aclose()
        return times

    async def run(self) -> None:
        sc = self.args.scenarios
        for rep in range(1, self.args.repeats + 1):
            variants = self.args.variants
            k = (rep - 1) % len(variants)
            order = variants[k:] + variants[:k]
            if "drain" in sc:
                for v in order:
                    await self.drain(v, rep)
            if "enqueue" in sc:
                await self.enqueue(rep)
            if "roundtrip" in sc:
                for v in ("floor", *order):
                    await self.roundtrip(v, rep)
        await self.r.flushall()
        await self.bt.app.aclose()
        await self.signed.aclose()
        await self.r.aclose()


def _cpu_per_job(app: Any, noop: Any, n: int = 20_000) -> dict[str, float]:
    """Microseconds of CPU per job: encoding one (``Call.prepare``, which signs when the app
    has a key) and, for a signed app, the worker's check of a started row (``verify_row``)."""
    from aioq.signing import verify_row

    t0 = time.perf_counter()
    for _ in range(n):
        noop.call().prepare()
    out = {"encode_us": (time.perf_counter() - t0) / n * 1e6}
    if app._signer is not None:
        queue, job = noop.call().prepare()
        # as start.lua returns it: entry id, job id, attempt, task, args, kwargs, timeout,
        # retries, priority, trace, input, sig (from the ENQUEUE values: Call.prepare; the
        # signature last)
        row = [b"1-0", job[0].encode(), 1, job[5].encode(), job[7], job[8], job[10].encode(),
               str(job[9]).encode(), 0, None, None, job[-1]]  # fmt: skip
        assert verify_row(app._signer, app.name, queue, row) is None
        t0 = time.perf_counter()
        for _ in range(n):
            verify_row(app._signer, app.name, queue, row)
        out["verify_us"] = (time.perf_counter() - t0) / n * 1e6
    return out


def report(runs: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, str]) -> str:
    def vals(variant: str, scenario: str, key: str) -> list[float]:
        return [r[key] for r in runs if r["variant"] == variant and r["scenario"] == scenario]

    def per_rep(variant: str, scenario: str, key: str) -> dict[int, float]:
        return {
            r["rep"]: r[key] for r in runs if r["variant"] == variant and r["scenario"] == scenario
        }

    def cell(xs: list[float], f: str) -> str:
        return f"{med(xs):{f}} ({min(xs):{f}}-{max(xs):{f}})" if xs else "-"

    L = [
        f"aioq worker benchmark: redis {info['redis-server']}, {args.repeats} repeats, "
        "median (min-max)",
        f"python {info['python']}, redis-py {info['redis-py']}, hiredis {info['hiredis']}, "
        f"aioq {info['aioq']}",
        f"machine: nproc {info['nproc']}, kernel {info['kernel']}, loadavg at start "
        f"{info['loadavg']}",
        "",
    ]
    if "drain" in args.scenarios:
        L.append(f"drain of {args.n:,} no-op jobs, --burst, concurrency 100 (jobs/s)")
        base = "cli-quiet" if "cli-quiet" in args.variants else args.variants[0]
        quiet = med(vals(base, "drain", "steady"))
        rows = [("worker", "excl. start-up", "incl. start-up", "start-up s", f"vs {base}")]
        for v in args.variants:
            steady = vals(v, "drain", "steady")
            ratio = f"{med(steady) / quiet:.2f}" if steady and quiet else "-"  # type: ignore[operator]
            rows.append((LABELS[v], cell(steady, ",.0f"), cell(vals(v, "drain", "total"), ",.0f"),
                         cell(vals(v, "drain", "startup"), ".3f"), ratio))  # fmt: skip
        L.extend(_table(rows))
        if "signed" in args.variants and "cli-quiet" in args.variants:
            signed = [
                s / u
                for s, u in zip(vals("signed", "drain", "steady"),
                                vals("cli-quiet", "drain", "steady"), strict=True)
            ]  # fmt: skip
            L.append(f"signed / logging off, per repeat: {cell(signed, '.2f')}")
        L.append("")
    if "enqueue" in args.scenarios:
        L.append(f"enqueue from one process, no worker (jobs/s): {args.m} awaited, {args.n:,} "
                 f"bulk, {args.m} enqueue_sync")  # fmt: skip
        rows = [("app", "await enqueue()", "enqueue_many", "enqueue_sync()")]
        for v in ("unsigned", "signed"):
            rows.append((v, *(cell(vals(v, "enqueue", k), ",.0f")
                              for k in ("sequential", "bulk", "sync"))))  # fmt: skip
        ratios = [
            cell([s / u for s, u in zip(vals("signed", "enqueue", k),
                                        vals("unsigned", "enqueue", k), strict=True)], ".2f")
            for k in ("sequential", "bulk", "sync")
        ]  # fmt: skip
        rows.append(("signed / unsigned", *ratios))
        L.extend(_table(rows))
        enc = {v: vals(v, "enqueue", "encode_us") for v in ("unsigned", "signed")}
        L.append(
            f"CPU per job: encode (Call.prepare) unsigned {cell(enc['unsigned'], '.2f')} us, "
            f"signed {cell(enc['signed'], '.2f')} us; the worker's check of a signed job "
            f"{cell(vals('signed', 'enqueue', 'verify_us'), '.2f')} us"
        )
        L.append("")
    if "roundtrip" in args.scenarios:
        L.append(
            f"round trip: enqueue -> no-op -> result() in hand, {args.m} sequential (ms); "
            "ratio: p50 / the floor's p50, per repeat"
        )
        floors = {r["rep"]: r["p50"] for r in runs if r["variant"] == "floor"}
        rows = [("worker", "p50", "p90", "p99", "ratio p50")]
        for v in ("floor", *args.variants):
            ratios = [
                r["p50"] / floors[r["rep"]]
                for r in runs
                if r["variant"] == v and r["scenario"] == "roundtrip" and r["rep"] in floors
            ]
            rt = [cell(vals(v, "roundtrip", k), ".3f") for k in ("p50", "p90", "p99")]
            rows.append((LABELS[v], *rt, cell(ratios, ".2f")))
        L.extend(_table(rows))
    if {"cli", "cli-uvloop"} <= set(args.variants):
        L.append("")
        L.append("uvloop / asyncio (the default CLI worker), per repeat:")
        for scenario, key, what in (("drain", "steady", "drain jobs/s (excl. start-up)"),
                                    ("roundtrip", "p50", "round trip p50")):  # fmt: skip
            uv, aio = per_rep("cli-uvloop", scenario, key), per_rep("cli", scenario, key)
            ratios = [uv[rep] / aio[rep] for rep in uv if rep in aio]
            if ratios:
                L.append(f"  {what}: {cell(ratios, '.2f')}")
    return "\n".join(L)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5,000 jobs, 300 round trips")
    ap.add_argument("--redis-url", help="use this running Redis (it is FLUSHALL'd!)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, help="jobs per drain (20,000; quick 5,000)")
    ap.add_argument("--m", type=int, help="round trips per variant (1,000; quick 300)")
    ap.add_argument(
        "--scenarios", default="drain,roundtrip", help="drain, roundtrip, enqueue (any of them)"
    )
    ap.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"workers to compare, of {', '.join(KNOWN)} (default {','.join(VARIANTS)})",
    )
    ap.add_argument("--json", help="write every run (and versions) to this file")
    args = ap.parse_args()
    args.n = args.n or (5_000 if args.quick else 20_000)
    args.m = args.m or (300 if args.quick else 1_000)
    args.scenarios = set(args.scenarios.split(","))
    args.variants = tuple(dict.fromkeys(args.variants.split(",")))
    unknown = [v for v in args.variants if v not in KNOWN]
    if unknown or not args.variants:
        ap.error(f"unknown --variants {', '.join(unknown)} (use {', '.join(KNOWN)})")
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
