"""aioq scheduling benchmark: rate-limited jobs mixed with unlimited ones, the cost of
100,000 scheduled jobs, and priorities.

    .venv/bin/python benchmarks/bench_scheduling.py            # full (~4 min)
    .venv/bin/python benchmarks/bench_scheduling.py --quick    # smaller, 2 repeats (< 1 min)
    options: --parts i,ii,iii,iv (a subset), --repeats N, --n/--m/--rate (i), --s (ii),
             --n-backlog/--backlog (iii), --n-prio (iv), --concurrency N, --unix,
             --redis-url URL

Starts its own redis-server on 127.0.0.1 (``bench_core.redis_server``; ``--unix`` for a unix
socket, ``--redis-url`` to use a running server, which is FLUSHALL'd), then:

  i.  mix: N unlimited no-op jobs drained by one worker subprocess
      (``python -m aioq worker bench_sched_tasks:app --concurrency 100``), three ways, every
      repeat in a rotated order:
        alone     N ``noop`` jobs
        +other    the same with M jobs of another unlimited task interleaved (the control:
                  as many extra jobs, no limit)
        +limited  the same with M jobs of a task limited to RATE interleaved
      Unlimited jobs/s = N / (first noop start .. last noop finish), recorded in the worker
      process (bench_record.py). For +limited it also reports how many limited jobs started
      during that drain, and, once all M ran, how long from first to last start, the most
      starts in any window of the limit's period (from the ``started_at`` Redis stamps),
      whether any spent more than one attempt, and how often a limited job was brought back
      from the scheduled set (stream entries added beyond those enqueued, / M).
  ii. scheduled: S jobs enqueued with ``enqueue_many`` and a one-hour delay: enqueue rate and
      Redis memory per scheduled job (INFO used_memory after - before, / S), next to S jobs
      queued for now (stream entry + record) as a reference. Then an idle worker is running,
      every job is made due at once (ZUNIONSTORE ... WEIGHTS 0 sets every score to 0), and
      the promotion rate is S / (that moment .. the scheduled set empty), polled every 5 ms,
      while the worker also runs what it promotes; plus the time until every job ran. Last,
      the ``promote`` script alone (called in a loop from this process, no worker) for the
      Redis-side ceiling.
  iii. backlog: N2 unlimited no-op jobs enqueued into a running worker (enqueue_many in
      chunks of 10,000), alone or while B jobs of the limited task wait their turn (enqueued
      first: one window started, the rest turned away to the scheduled set). Reports the
      unlimited jobs/s both ways, and how often limited jobs were brought back to the stream
      (promotions, from XINFO STREAM entries-added) and started, per second, meanwhile: a
      limiter that keeps a backlog waiting should bring it back at about the rate it can start.
  iv. priorities: a backlog of N3 no-op jobs (``prio(p)``, enqueued before the worker starts)
      drained by one worker, two ways (order rotated every repeat):
        flat      all at priority 0 (the reference)
        spread    job i at priority i % 10: all ten streams busy
      Jobs/s from first start to last finish, as in i, and the ratio spread/flat: the cost of
      reading ten streams (also per repeat, flat and spread run back to back), and Redis' own
      time in scripts per job and commands per 100 jobs (INFO commandstats, reset before the
      worker starts). Every job records its level, in the order the worker starts
      them, and its fetched batch (bench_sched_tasks.py). From that order in ``spread``: the
      share of starts that went to the highest level with jobs waiting at that moment, and of
      the rest (fair turns: a lower level while a higher one waited); per level, the largest
      gap in starts between two of its starts while it had jobs waiting (its first start
      counted from the run's first). The documented bound is that a waiting level gets at
      least one of every 100 of a worker's starts: every gap over 100 is counted and told in a
      note.

Prints versions, machine, and median (min-max) over the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import as_installed

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import redis.asyncio as aredis  # noqa: E402
from bench_core import log, redis_server, versions  # noqa: E402

from aioq.keys import PRIORITIES  # noqa: E402
from aioq.scripts import FAIR  # noqa: E402

K_DONE, K_FIRST_START, K_LAST = "bench:done", "bench:first_start", "bench:last"
K_LIMITED_DONE = "bench:limited_done"
K_LAT = "bench:lat"  # iv: "level time batch" per start, in start order (bench_record.lat)
HOUR = 3600.0
COUNTED = ("evalsha", "xreadgroup", "xlen", "xack")  # iv: Redis commands counted per job
BOUND = FAIR * PRIORITIES  # iv: a waiting level gets at least one of every 100 starts


def span(xs: list[float], unit: str = "") -> str:
    """median (min-max) of a list of figures."""
    if not xs:
        return "-"
    whole = max(xs) >= 100 or all(float(x).is_integer() for x in xs)

    def f(v: float) -> str:
        return f"{v:,.0f}" if whole else f"{v:.2f}"

    if len(xs) == 1:
        return f"{f(xs[0])}{unit}"
    return f"{f(statistics.median(xs))}{unit} ({f(min(xs))}-{f(max(xs))})"


def parse_rate(rate: str) -> tuple[int, float]:
    """ "100/s" -> (100, 1.0): the limit and its period in seconds."""
    n, unit = rate.split("/")
    return int(n), {"s": 1.0, "m": 60.0, "h": 3600.0}[unit.strip()]


def max_in_window(starts: list[int], window_ms: int) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(starts):
        while starts[lo] <= t - window_ms:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def batches(starts: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """(level, batch) starts, in order, grouped by batch."""
    out: list[list[tuple[int, int]]] = []
    for st in starts:
        if not out or out[-1][0][1] != st[1]:
            out.append([])
        out[-1].append(st)
    return out


@dataclass
class Order:
    """How a worker's starts followed priority (iv). A level waits from the first start until
    its last job starts (the whole backlog is queued before the worker starts)."""

    to_highest: int = 0  # starts that went to the highest level with jobs waiting
    lower: int = 0  # starts given to a lower level while a higher one waited: fair turns
    contested: int = 0  # starts made while two or more levels had jobs waiting
    # per level, the largest gap between two of its starts while it waited (the first counted
    # from the run's start: a level whose first start is the 40th has waited 40 starts)
    gap: dict[int, int] = field(default_factory=dict)
    over: list[str] = field(default_factory=list)  # every gap over BOUND, told in full


def order_stats(starts: list[tuple[int, int]]) -> Order:
    groups = batches(starts)
    left = Counter(lv for lv, _ in starts)  # jobs not yet started, per level
    o = Order(gap=dict.fromkeys(left, 0))
    where = [(i, j) for i, g in enumerate(groups) for j in range(len(g))]
    last: dict[int, int] = dict.fromkeys(left, -1)
    for n, (lv, _) in enumerate(starts):
        top = max(left)  # left holds only the levels with jobs waiting
        o.contested += len(left) > 1
        if lv == top:
            o.to_highest += 1
        else:
            o.lower += 1
        g = n - last[lv]
        o.gap[lv] = max(o.gap[lv], g)
        if g > BOUND:
            b2, j2 = where[n]
            if last[lv] < 0:
                since = "the run's first start"
            else:
                b1, j1 = where[last[lv]]
                since = (
                    f"its start #{last[lv] + 1} (batch {b1 + 1}, {j1 + 1}. of {len(groups[b1])})"
                )
            o.over.append(
                f"level {lv} waited {g} starts, from {since} to its start #{n + 1} "
                f"(batch {b2 + 1}, {j2 + 1}. of {len(groups[b2])}); "
                f"levels waiting then: {sorted(left, reverse=True)}"
            )
        last[lv] = n
        left[lv] -= 1
        if not left[lv]:
            del left[lv]
    return o


class Bench:
    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.url = url
        self.args = args
        os.environ["AIOQ_REDIS_URL"] = url
        os.environ["BENCH_RATE"] = args.rate
        import bench_sched_tasks

        self.t = bench_sched_tasks
        self.app = bench_sched_tasks.app
        self.app.rebind(redis_url=url)
        self.r = aredis.from_url(url)
        self.env = as_installed.child_env({**os.environ, "PYTHONUNBUFFERED": "1"})
        self.logdir = Path(tempfile.mkdtemp(prefix="aioq-bench-sched-logs-"))
        self.figures: dict[str, list[float]] = {}
        self.notes: list[str] = []

    def add(self, key: str, value: float) -> None:
        self.figures.setdefault(key, []).append(value)

    async def aclose(self) -> None:
        await self.app.aclose()
        await self.r.aclose()

    # -- worker process --

    def spawn(self, tag: str) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable, "-m", "aioq", "worker", "bench_sched_tasks:app",
            "--concurrency", str(self.args.concurrency), "--log-level", "warning",
        ]  # fmt: skip
        with open(self.logdir / f"{tag}.log", "ab") as out:
            return subprocess.Popen(cmd, cwd=HERE, env=self.env, stdout=out, stderr=out)

    async def stop(self, p: subprocess.Popen[bytes]) -> None:
        p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while p.poll() is None:
            if time.monotonic() > deadline:
                p.kill()
                p.wait()
                self.notes.append("a worker did not stop within 20 s of SIGTERM")
                return
            await asyncio.sleep(0.01)

    async def until(
        self, check: Any, timeout: float, what: str, p: subprocess.Popen[bytes] | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if p is not None and p.poll() is not None:
                raise RuntimeError(f"worker exited (rc {p.returncode}) before {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timeout ({timeout:.0f}s): {what}")
            await asyncio.sleep(0.005)

    async def parked(self, p: subprocess.Popen[bytes]) -> None:
        async def blocked() -> bool:
            clients = await self.r.client_list()
            return any(c["cmd"] == "xreadgroup" and "b" in c["flags"] for c in clients)

        await self.until(blocked, 30, "the worker parked on its stream", p)

    async def count(self, key: str) -> int:
        return int(await self.r.get(key) or 0)

    # -- i. mix --

    async def mix(self, variant: str, rep: int) -> None:
        n: int = self.args.n
        m: int = self.args.m
        await self.r.flushall()
        t = self.t
        calls: list[Any] = []
        extra = {"alone": None, "+other": t.other, "+limited": t.limited}[variant]
        every = n // m if extra is not None else 0
        for i in range(n):
            calls.append(t.noop.call())
            if every and i % every == every - 1 and len(calls) - i - 1 < m:
                calls.append(extra.call())
        jobs = await self.app.enqueue_many(calls)
        limited_ids = [j.id for j, c in zip(jobs, calls, strict=True) if c.task is t.limited]
        p = self.spawn(f"mix{variant}.r{rep}")
        try:

            async def drained() -> bool:
                return await self.count(K_DONE) >= n

            await self.until(drained, 300, f"{n} unlimited jobs done", p)
            first = float(await self.r.get(K_FIRST_START) or 0)
            last = float(await self.r.get(K_LAST) or 0)
            rate = n / (last - first)
            self.add(f"mix {variant}", rate)
            msg = f"rep {rep} {variant:>8}: {rate:>9,.0f} unlimited jobs/s"
            if variant == "+limited":
                during = await self.count(K_LIMITED_DONE)
                self.add("limited started during the drain", during)

                async def limited_done() -> bool:
                    return await self.count(K_LIMITED_DONE) >= m

                limit, period_s = parse_rate(self.args.rate)
                await self.until(limited_done, m / limit * 3 + 30, f"{m} limited jobs done", p)
                starts, attempts = await self.limited_starts(limited_ids)
                # N per window: M starts need (ceil(M / N) - 1) periods at least, and a
                # limiter that keeps up starts them all in about that; M / (that + 1 period)
                # is then the limit itself
                took = (starts[-1] - starts[0]) / 1000
                achieved = m / (took + period_s)
                window = max_in_window(starts, round(period_s * 1000))
                self.add("limited span", took)
                self.add("limited rate", achieved)
                self.add("limited max per period", window)
                self.add("limited attempts > 1", sum(a > 1 for a in attempts))
                # every stream entry beyond the jobs enqueued is a limited job brought back
                # from the scheduled set by the promote script
                comebacks = (await self.entries_added() - len(calls)) / m
                self.add("limited come-backs per job", comebacks)
                msg += (
                    f"; limited: {during} started during the drain ({last - first:.2f}s), "
                    f"all {m} within {took:.2f}s ({achieved:,.1f}/s), max {window} per period, "
                    f"max attempts {max(attempts)}, {comebacks:.2f} come-backs per job"
                )
            log(msg)
        finally:
            await self.stop(p)

    async def entries_added(self) -> int:
        """XADDs to the queue's stream since it was created (enqueues and promotions)."""
        info = await self.r.xinfo_stream(self.app.keys().stream)
        return int(info["entries-added"])

    # -- iii. backlog --

    async def backlog(self, variant: str, rep: int) -> None:
        """N unlimited jobs enqueued into a running worker, alone or while B jobs of the
        limited task wait their turn (the first window started, the rest turned away)."""
        n: int = self.args.n_backlog
        b: int = self.args.backlog
        limit, period_s = parse_rate(self.args.rate)
        keys = self.app.keys()
        await self.r.flushall()
        p = self.spawn(f"backlog{variant}.r{rep}")
        try:
            await self.parked(p)
            if variant == "+backlog":
                await self.app.enqueue_many([self.t.limited.call() for _ in range(b)])

                async def waiting() -> bool:
                    started = await self.count(K_LIMITED_DONE)
                    return started >= limit and await self.r.zcard(keys.scheduled) >= b - started

                await self.until(waiting, 60, f"{b} limited jobs started or waiting", p)
                await asyncio.sleep(period_s / 2)
            added, started = await self.entries_added(), await self.count(K_LIMITED_DONE)
            t0 = time.perf_counter()
            await self.enqueue_chunks(n, None)

            async def drained() -> bool:
                return await self.count(K_DONE) >= n

            await self.until(drained, 300, f"{n} unlimited jobs done", p)
            dt = time.perf_counter() - t0
            first = float(await self.r.get(K_FIRST_START) or 0)
            last = float(await self.r.get(K_LAST) or 0)
            comebacks = (await self.entries_added() - added - n) / dt
            started = await self.count(K_LIMITED_DONE) - started
        finally:
            await self.stop(p)
        rate = n / (last - first)
        self.add(f"backlog {variant}", rate)
        msg = f"rep {rep} {variant:>9}: {rate:>9,.0f} unlimited jobs/s"
        if variant == "+backlog":
            self.add("backlog come-backs/s", comebacks)
            self.add("backlog starts/s", started / dt)
            msg += f"; limited jobs brought back {comebacks:,.0f}/s, started {started / dt:,.0f}/s"
        log(msg)

    # -- iv. priorities --

    async def priorities(self, variant: str, rep: int) -> None:
        """A backlog of N no-op jobs drained by one worker: all at priority 0 (flat) or at
        priorities i % 10 (spread); each start recorded in order with its level and batch."""
        n: int = self.args.n_prio
        prio = self.t.prio
        await self.r.flushall()
        levels = [0 if variant == "flat" else i % PRIORITIES for i in range(n)]
        for i in range(0, n, 10_000):
            chunk = levels[i : i + 10_000]
            await self.app.enqueue_many([prio.options(priority=lv).call(lv) for lv in chunk])
        await self.r.config_resetstat()
        p = self.spawn(f"prio-{variant}.r{rep}")
        try:

            async def drained() -> bool:
                return await self.count(K_DONE) >= n and await self.r.llen(K_LAT) >= n

            await self.until(drained, 300, f"{n} jobs at priorities done", p)
            first = float(await self.r.get(K_FIRST_START) or 0)
            last = float(await self.r.get(K_LAST) or 0)
            rows: list[bytes] = await self.r.lrange(K_LAT, 0, -1)
            stats = await self.r.info("commandstats")
        finally:
            await self.stop(p)
        rate = n / (last - first)
        self.add(f"prio {variant}", rate)
        # Redis work per job: script calls (round trips of the worker) and the commands the
        # scripts ran (start-up, the idle worker's parked reads and the bench's polls included)
        calls = {c: stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in COUNTED}
        for c, k in calls.items():
            self.add(f"prio {variant} {c}", k / n * 100)
        script_us = stats.get("cmdstat_evalsha", {}).get("usec", 0) / n
        self.add(f"prio {variant} script us", script_us)
        msg = f"rep {rep} {variant:>6}: {rate:>9,.0f} jobs/s, {script_us:.1f} us/job in scripts"
        msg += ", per 100 jobs " + ", ".join(f"{k / n * 100:.1f} {c}" for c, k in calls.items())
        starts = [(int(level), int(batch)) for level, _, batch in (r.split() for r in rows)]
        if sorted(lv for lv, _ in starts) != sorted(levels):
            raise RuntimeError(f"{variant}: the starts recorded are not the jobs enqueued")
        sizes = [len(g) for g in batches(starts)]
        full = min(200, (self.args.concurrency + 1) // 2)  # Worker.fetch_size
        self.add(f"prio {variant} full", sum(s for s in sizes if s == full) / n * 100)
        msg += f", batches of {statistics.median(sizes):.0f} (median; {len(sizes):,} batches)"
        if variant == "spread":
            o = order_stats(starts)
            self.add("prio to highest", o.to_highest / n * 100)
            self.add("prio fair", o.lower / n * 100)
            self.add("prio contested", o.contested)
            self.add("prio fair of contested", o.lower / o.contested * 100)
            self.add("prio max gap", max(o.gap.values()))
            self.add("prio gaps over bound", len(o.over))
            for level, g in o.gap.items():
                self.add(f"prio gap {level}", g)
            for w in o.over[:5]:
                self.notes.append(f"iv. rep {rep}: {w}")
            if len(o.over) > 5:
                self.notes.append(f"iv. rep {rep}: and {len(o.over) - 5} more gaps over {BOUND}")
            msg += (
                f"; {o.to_highest / n:.1%} to the highest waiting level, {o.lower / n:.1%} fair "
                f"turns to a lower one; largest gap {max(o.gap.values())} starts (level "
                f"{max(o.gap, key=lambda lv: o.gap[lv])}), {len(o.over)} over {BOUND}"
            )
        log(msg)

    async def limited_starts(self, ids: list[str]) -> tuple[list[int], list[int]]:
        keys = self.app.keys()
        async with self.r.pipeline(transaction=False) as pipe:
            for jid in ids:
                pipe.hmget(keys.job(jid), ["started_at", "attempts", "status"])
            rows = await pipe.execute()
        bad = [r[2] for r in rows if r[2] != b"succeeded"]
        if bad:
            self.notes.append(f"{len(bad)} limited jobs did not succeed: {set(bad)}")
        return sorted(int(r[0]) for r in rows), [int(r[1]) for r in rows]

    # -- ii. scheduled --

    async def used_memory(self) -> int:
        info = await self.r.info("memory")
        return int(info["used_memory"])

    async def enqueue_chunks(self, s: int, delay: float | None) -> float:
        """Enqueue ``s`` noop jobs (delayed by ``delay`` or due now) in enqueue_many calls of
        10,000; returns the seconds it took."""
        task = self.t.noop if delay is None else self.t.noop.options(delay=delay)
        t0 = time.perf_counter()
        for i in range(0, s, 10_000):
            await self.app.enqueue_many([task.call() for _ in range(min(10_000, s - i))])
        return time.perf_counter() - t0

    async def scheduled(self, rep: int) -> None:
        s: int = self.args.s
        keys = self.app.keys()
        await self.r.flushall()
        await self.enqueue_chunks(1, HOUR)  # scripts loaded: not charged to the jobs
        await self.r.flushall()
        before = await self.used_memory()
        dt = await self.enqueue_chunks(s, HOUR)
        after = await self.used_memory()
        if await self.r.zcard(keys.scheduled) != s:
            raise RuntimeError(f"{s} jobs enqueued with a delay are not all in the scheduled set")
        per_job = (after - before) / s
        first_ids: list[Any] = await self.r.zrange(keys.scheduled, 0, 0)
        sample = first_ids[0].decode()
        hash_bytes = await self.r.memory_usage(keys.job(sample)) or 0
        zset_bytes = (await self.r.memory_usage(keys.scheduled, samples=0) or 0) / s
        self.add("scheduled enqueue", s / dt)
        self.add("scheduled bytes/job", per_job)
        self.add("scheduled hash bytes", hash_bytes)
        self.add("scheduled zset bytes/job", zset_bytes)
        log(
            f"rep {rep} scheduled: enqueued {s:,} at {s / dt:,.0f}/s; {per_job:,.0f} B/job "
            f"(record {hash_bytes} B, set {zset_bytes:,.0f} B/member)"
        )

        await self.r.flushall()
        before = await self.used_memory()
        await self.enqueue_chunks(s, None)
        after = await self.used_memory()
        self.add("queued bytes/job", (after - before) / s)

        # promotion by a worker that also runs what it promotes
        await self.r.flushall()
        await self.enqueue_chunks(s, HOUR)
        p = self.spawn(f"promote.r{rep}")
        try:
            await self.parked(p)
            t0 = time.perf_counter()
            await self.r.zunionstore(keys.scheduled, {keys.scheduled: 0})  # all due now
            points: list[tuple[float, int]] = []

            async def emptied() -> bool:
                left = int(await self.r.zcard(keys.scheduled))
                points.append((time.perf_counter() - t0, left))
                return left == 0

            await self.until(emptied, 300, "every scheduled job promoted", p)
            t_promoted = time.perf_counter() - t0
            first_move = next(t for t, left in points if left < s)

            async def ran() -> bool:
                return await self.count(K_DONE) >= s

            await self.until(ran, 300, "every promoted job ran", p)
            t_ran = time.perf_counter() - t0
        finally:
            await self.stop(p)
        self.add("promotion by worker", s / t_promoted)
        self.add("promoted and ran", s / t_ran)
        log(
            f"rep {rep} promotion by a worker: {s / t_promoted:,.0f} jobs/s "
            f"(first move after {first_move * 1000:.0f} ms, set empty after {t_promoted:.2f}s); "
            f"all ran after {t_ran:.2f}s ({s / t_ran:,.0f} jobs/s)"
        )

        # the promote script alone, no worker
        await self.r.flushall()
        await self.enqueue_chunks(s, HOUR)
        await self.r.zunionstore(keys.scheduled, {keys.scheduled: 0})
        t0 = time.perf_counter()
        moved = 0
        while moved < s:
            m, _, _ = await self.app.scripts.promote(keys, self.app.result_ttl, 1000)
            if not m:
                break
            moved += m
        dt = time.perf_counter() - t0
        if moved != s or await self.r.xlen(keys.stream) != s:
            raise RuntimeError(f"promote moved {moved} of {s} jobs")
        self.add("promote script alone", s / dt)
        log(f"rep {rep} promote script alone: {s / dt:,.0f} jobs/s")

    async def run(self) -> None:
        parts = self.args.parts
        variants = ["alone", "+other", "+limited"]
        for rep in range(self.args.repeats if "i" in parts else 0):
            k = rep % len(variants)
            for v in variants[k:] + variants[:k]:
                await self.mix(v, rep)
        for rep in range(self.args.scheduled_repeats if "ii" in parts else 0):
            await self.scheduled(rep)
        variants = ["alone", "+backlog"]
        for rep in range(self.args.repeats if "iii" in parts else 0):
            for v in variants[rep % 2 :] + variants[: rep % 2]:
                await self.backlog(v, rep)
        variants = ["flat", "spread"]
        for rep in range(self.args.repeats if "iv" in parts else 0):
            for v in variants[rep % 2 :] + variants[: rep % 2]:
                await self.priorities(v, rep)
            # the same repeat's pair, a few seconds apart: less of the machine's drift
            f = self.figures
            self.add("prio paired", f["prio spread"][-1] / f["prio flat"][-1])
            us = f["prio spread script us"][-1] / f["prio flat script us"][-1]
            self.add("prio paired script us", us)
        await self.r.flushall()


def compared(
    f: dict[str, list[float]], rows: list[tuple[str, str]], base_name: str = "alone"
) -> list[str]:
    """Rows of jobs/s with their ratio to the first row's median."""
    base = statistics.median(f[rows[0][1]])
    return [
        f"  {label:<56} {span(f[key]):<28} ratio to {base_name} "
        f"{statistics.median(f[key]) / base:.2f}"
        for label, key in rows
    ]


def plain(f: dict[str, list[float]], rows: list[tuple[str, str]]) -> list[str]:
    return [f"  {label:<56} {span(f[key])}" for label, key in rows]


def report(b: Bench, info: dict[str, str], url: str) -> str:
    a, f = b.args, b.figures
    where = "unix socket" if url.startswith("unix") else "127.0.0.1 loopback"
    lines = [
        f"aioq scheduling benchmark: redis {info['redis-server']} on {where}; "
        f"median (min-max) of {a.repeats} repeats (ii: {a.scheduled_repeats})",
        f"python {info['python']}, redis-py {info['redis-py']}, hiredis {info['hiredis']}, "
        f"aioq {info['aioq']}",
        f"machine: nproc {info['nproc']}, kernel {info['kernel']} {info['machine']}, "
        f"loadavg at start {info['loadavg']}",
    ]
    if "i" in a.parts:
        lines += [
            "",
            f"i. one worker, --concurrency {a.concurrency}; {a.n:,} unlimited no-op jobs, "
            f"{a.m:,} extra jobs interleaved",
        ]
        lines += compared(f, [
            ("unlimited jobs/s, alone", "mix alone"),
            (f"unlimited jobs/s, +{a.m:,} unlimited 'other' (control)", "mix +other"),
            (f"unlimited jobs/s, +{a.m:,} limited at {a.rate}", "mix +limited"),
        ])  # fmt: skip
        lines += plain(f, [
            ("limited jobs started during that drain", "limited started during the drain"),
            ("limited jobs: first to last start (s)", "limited span"),
            ("limited jobs: M / (first to last start + 1 period)", "limited rate"),
            ("limited jobs: most starts in any one period", "limited max per period"),
            ("limited jobs that spent more than one attempt", "limited attempts > 1"),
            ("limited jobs: come-backs from the scheduled set per job",
             "limited come-backs per job"),
        ])  # fmt: skip
    if "ii" in a.parts:
        lines += ["", f"ii. {a.s:,} jobs scheduled with enqueue_many (delay 1 h)"]
        lines += plain(f, [
            ("enqueue_many of delayed jobs (jobs/s)", "scheduled enqueue"),
            ("Redis memory per scheduled job (bytes)", "scheduled bytes/job"),
            ("  of which MEMORY USAGE of one job record", "scheduled hash bytes"),
            ("  of which scheduled-set bytes per member", "scheduled zset bytes/job"),
            ("reference: memory per job queued for now (bytes)", "queued bytes/job"),
            ("promotion rate, all due at once, by a worker (jobs/s)", "promotion by worker"),
            ("  the same worker: promoted and ran (jobs/s)", "promoted and ran"),
            ("promote script alone, 1,000 per call (jobs/s)", "promote script alone"),
        ])  # fmt: skip
    if "iii" in a.parts:
        lines += [
            "",
            f"iii. one worker, --concurrency {a.concurrency}; {a.n_backlog:,} unlimited no-op "
            f"jobs enqueued while it runs, alone or while {a.backlog:,} jobs limited at "
            f"{a.rate} wait",
        ]
        lines += compared(f, [
            ("unlimited jobs/s, alone", "backlog alone"),
            (f"unlimited jobs/s, {a.backlog:,} limited jobs waiting", "backlog +backlog"),
        ])  # fmt: skip
        lines += plain(f, [
            ("limited jobs brought back to the stream (/s)", "backlog come-backs/s"),
            ("limited jobs started (/s)", "backlog starts/s"),
        ])  # fmt: skip
    if "iv" in a.parts:
        lines += [
            "",
            f"iv. one worker, --concurrency {a.concurrency}; a backlog of {a.n_prio:,} no-op "
            f"jobs, all at priority 0 (flat) or at priorities i % {PRIORITIES} (spread)",
        ]
        lines += compared(f, [
            ("jobs/s, flat: all at priority 0", "prio flat"),
            (f"jobs/s, spread: {PRIORITIES} levels, all busy", "prio spread"),
        ], "flat")  # fmt: skip
        lines += plain(f, [("  spread / flat, each repeat's pair", "prio paired")])
        lines += compared(f, [
            ("Redis time in scripts per job (us), flat", "prio flat script us"),
            ("Redis time in scripts per job (us), spread", "prio spread script us"),
        ], "flat")  # fmt: skip
        lines += plain(f, [("  spread / flat, each repeat's pair", "prio paired script us")])
        full = min(200, (a.concurrency + 1) // 2)
        for c in COUNTED:
            fl, sp = (statistics.median(f[f"prio {v} {c}"]) for v in ("flat", "spread"))
            what = "script calls" if c == "evalsha" else f"{c.upper()}s"
            lines.append(f"  {what + ' per 100 jobs, flat / spread':<56} {fl:.1f} / {sp:.1f}")
        lines += plain(f, [
            (f"flat: starts in full batches of {full} (%)", "prio flat full"),
            (f"spread: starts in full batches of {full} (%)", "prio spread full"),
            ("spread, % of starts: to the highest level waiting", "prio to highest"),
            ("  to a lower level while a higher waited (fair turns)", "prio fair"),
            ("  the same, % of the starts while 2+ levels waited", "prio fair of contested"),
            ("  starts made while 2+ levels waited", "prio contested"),
            ("largest gap between a level's starts while it waited", "prio max gap"),
            (f"gaps over {BOUND} starts (the documented bound: none)", "prio gaps over bound"),
        ])  # fmt: skip
        by_level = ", ".join(
            f"p{lv} {max(f[f'prio gap {lv}']):,.0f}"
            for lv in range(PRIORITIES - 1, -1, -1)
            if f"prio gap {lv}" in f
        )
        lines.append(f"  largest gap by level, the most over the repeats: {by_level}")
    if b.notes:
        lines.append("")
        lines += [f"note: {n}" for n in b.notes]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5,000 + 500 jobs, 20,000 scheduled")
    ap.add_argument("--unix", action="store_true", help="redis on a unix socket (EmbeddedRedis)")
    ap.add_argument("--redis-url", help="use this running Redis (it is FLUSHALL'd!)")
    ap.add_argument("--n", type=int, help="unlimited jobs (20,000; quick 5,000)")
    ap.add_argument("--m", type=int, help="limited / control jobs mixed in (2,000; quick 500)")
    ap.add_argument("--rate", default="100/s", help="the limited task's rate limit")
    ap.add_argument("--s", type=int, help="scheduled jobs (100,000; quick 20,000)")
    ap.add_argument("--n-backlog", type=int, help="unlimited jobs in iii (100,000; quick 20,000)")
    ap.add_argument("--backlog", type=int, help="limited jobs waiting in iii (10,000; quick 5,000)")
    ap.add_argument("--n-prio", type=int, help="jobs in iv (20,000; quick 5,000)")
    ap.add_argument("--repeats", type=int, help="repeats of i, iii and iv (3; quick 2)")
    ap.add_argument("--scheduled-repeats", type=int, help="repeats of ii (2; quick 1)")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--parts", default="i,ii,iii,iv", help="comma-separated subset of i,ii,iii,iv")
    args = ap.parse_args()
    args.parts = set(args.parts.split(","))
    if not args.parts <= {"i", "ii", "iii", "iv"}:
        ap.error(f"--parts: expected a subset of i,ii,iii,iv, got {','.join(sorted(args.parts))}")
    args.n = args.n or (5_000 if args.quick else 20_000)
    args.m = args.m or (500 if args.quick else 2_000)
    args.s = args.s or (20_000 if args.quick else 100_000)
    args.n_backlog = args.n_backlog or (20_000 if args.quick else 100_000)
    args.backlog = args.backlog or (5_000 if args.quick else 10_000)
    args.n_prio = args.n_prio or (5_000 if args.quick else 20_000)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.scheduled_repeats = args.scheduled_repeats or (1 if args.quick else 2)

    with redis_server("unix" if args.unix else "tcp", args.redis_url) as url:
        info = versions(url)

        async def go() -> Bench:
            b = Bench(url, args)
            try:
                await b.run()
            finally:
                await b.aclose()
            log(f"worker logs in {b.logdir}")
            return b

        bench = asyncio.run(go())
        text = report(bench, info, url)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
