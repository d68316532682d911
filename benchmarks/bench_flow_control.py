"""What deduplication, debounce, bounded queues and broadcast cost the producer, and what the
plain enqueue (no option used) pays for them being there, against another commit, in one run.

    .venv/bin/python benchmarks/bench_flow_control.py                 # options only (~30 s)
    git archive a4ce3a9 aioq | tar -x -C /tmp/base                    # a snapshot to compare
    .venv/bin/python benchmarks/bench_flow_control.py --baseline /tmp/base --repeats 9

Starts its own redis-server (aioq.embedded, unix socket). Every measurement enqueues into a
freshly flushed Redis and records three figures: jobs/s (wall), the producer's CPU time per
job (``time.process_time``) and Redis' time per EVALSHA (``INFO commandstats``), the last two
far less sensitive to a busy machine than the first.

  A/B (``--baseline DIR``): the plain path, ``await noop.enqueue()`` N times in sequence and
      ``enqueue_many`` of 4N, alternately by this checkout and by the aioq in DIR (a subprocess
      with PYTHONPATH=DIR), ``--repeats`` times; medians and minimums, and this/baseline. And
      the ENQUEUE script alone: 4N one-job EVALSHAs pipelined from redis-py, Redis' time per
      call, three per repeat (nothing but Redis in that loop, so the steadiest figure).
  options: sequential enqueues with each option, as a ratio to plain in the same repeat:
      ``unique_for`` (every key new: the lock is written), ``unique_for`` hit (one key: the
      existing job comes back), ``debounce`` hit (one key: arguments and due time updated),
      a queue with a limit (never reached: the size is counted per call), and a broadcast to
      three live workers (heartbeats written by the benchmark; one worker-stats read and three
      copies per enqueue).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent


async def _measure(url: str, variant: str, n: int) -> dict[str, float]:
    from aioq import App
    from aioq.keys import workers_key

    # the options only where measured: a baseline commit may not have them
    limits = {"queue_limits": {"limited": 10**9}} if variant == "limited" else {}
    app = App("bench", redis_url=url, **limits)  # type: ignore[arg-type]

    @app.task
    async def noop(k: int = 0) -> None: ...

    @app.task(queue="limited")
    async def limited() -> None: ...

    redis = app.redis
    await app.ping()
    for _ in range(20):  # warm: connections open, scripts loaded
        await noop.enqueue()
    await redis.flushall()
    await redis.config_resetstat()
    if variant == "broadcast":
        for i in range(3):
            beat = {"beat": int(time.time() * 1000) + 600_000, "queues": ["default"], "pid": i}
            await redis.hset(workers_key(app.name), f"h:{i}:x", orjson.dumps(beat))
        flush = app.task(broadcast=True, name="flush")(_flush)
    calls: Any
    if variant == "plain":
        calls = [noop.enqueue] * n
    elif variant == "unique-new":
        opt = noop.options(unique_for=60)
        calls = [lambda i=i: opt.enqueue(i) for i in range(n)]
    elif variant == "unique-hit":
        calls = [noop.options(unique_for=60).enqueue] * n
    elif variant == "debounce-hit":
        calls = [noop.options(debounce=60, unique_key="k").enqueue] * n
    elif variant == "limited":
        calls = [limited.enqueue] * n
    elif variant == "broadcast":
        calls = [flush.enqueue] * n
    elif variant == "bulk":
        calls = None
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    cpu0, t0 = time.process_time(), time.perf_counter()
    if calls is None:
        await app.enqueue_many([noop.call() for _ in range(n)])
    else:
        for call in calls:
            await call()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stats = (await redis.info("commandstats")).get("cmdstat_evalsha", {})
    evals = max(1, int(stats.get("calls", 1)))
    await app.aclose()
    return {
        "rate": n / wall,
        "cpu_us": cpu / n * 1e6,
        "redis_us_per_call": float(stats.get("usec", 0)) / evals,
        "redis_us_per_job": float(stats.get("usec", 0)) / n,
    }


async def _flush() -> None: ...


def _script(url: str, n: int) -> dict[str, float]:
    """Redis' time per ENQUEUE call of one job, nothing else in the loop: ``n`` EVALSHAs
    pipelined from redis-py, with this aioq's script and values (``Call.prepare``)."""
    import redis

    from aioq import App
    from aioq.scripts import ENQUEUE

    app = App("bench-script", redis_url=url)

    @app.task
    async def noop() -> None: ...

    # a script that reads a queue limit first (ARGV[1], enqueue.lua) gets it: 0, none
    prefix = [0] if "limit = " in ENQUEUE else []
    keys = app.keys()
    r = redis.Redis.from_url(url)
    sha = r.script_load(ENQUEUE)
    r.flushall()
    r.config_resetstat()
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        _, job = noop.call().prepare(job_id=f"j{i}")
        pipe.evalsha(sha, len(keys.declared) + 1, *keys.declared, keys.job(job[0]), *prefix, *job)
    pipe.execute()
    stats = r.info("commandstats")["cmdstat_evalsha"]
    r.close()
    return {"rate": 0.0, "cpu_us": 0.0, "redis_us_per_call": float(stats["usec_per_call"]),
            "redis_us_per_job": float(stats["usec_per_call"])}  # fmt: skip


def _child(url: str, variant: str, n: int, baseline: str | None) -> dict[str, float]:
    env = {**os.environ}
    if baseline:
        env["PYTHONPATH"] = baseline
    else:
        env.pop("PYTHONPATH", None)
    out = subprocess.check_output(
        [sys.executable, str(Path(__file__)), "--child", variant, "--url", url, "--n", str(n)],
        env=env,
        cwd="/",  # neither checkout on sys.path but the one PYTHONPATH (or the install) names
    )
    result: dict[str, float] = json.loads(out)
    return result


def _row(name: str, runs: list[dict[str, float]], ref: list[dict[str, float]] | None) -> str:
    def med(rs: list[dict[str, float]], k: str) -> float:
        return statistics.median(r[k] for r in rs)

    def low(rs: list[dict[str, float]], k: str) -> float:
        return min(r[k] for r in rs)

    cells = [
        f"{name:<22}",
        f"{med(runs, 'rate'):>9,.0f}",
        f"{med(runs, 'cpu_us'):>6.1f} ({low(runs, 'cpu_us'):>5.1f})",
        f"{med(runs, 'redis_us_per_job'):>6.1f} ({low(runs, 'redis_us_per_job'):>5.1f})",
    ]
    if ref is not None:
        cells.append(
            f"{med(runs, 'rate') / med(ref, 'rate'):>5.2f} "
            f"{low(runs, 'cpu_us') / low(ref, 'cpu_us'):>5.2f} "
            f"{low(runs, 'redis_us_per_job') / low(ref, 'redis_us_per_job'):>5.2f}"
        )
    return "  ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", help="a directory holding another commit's aioq package")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=5000, help="enqueues per measurement")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "script":
        print(json.dumps(_script(args.url, args.n)))
        return
    if args.child:
        print(json.dumps(asyncio.run(_measure(args.url, args.child, args.n))))
        return

    import aioq
    from aioq.embedded import EmbeddedRedis

    print(f"aioq from {Path(aioq.__file__).parent}; baseline {args.baseline or '(none)'}")
    print(f"n={args.n}, repeats={args.repeats}, machine nproc {os.cpu_count()}, "
          f"loadavg {os.getloadavg()[0]:.2f}")  # fmt: skip
    head = f"{'':<22}  {'jobs/s':>9}  {'cpu us/job (min)':>16}  {'redis us/job (min)':>18}"
    with EmbeddedRedis() as server:
        url = server.url
        if args.baseline:
            runs: dict[str, list[dict[str, float]]] = {"this": [], "base": []}
            bulk: dict[str, list[dict[str, float]]] = {"this": [], "base": []}
            script: dict[str, list[dict[str, float]]] = {"this": [], "base": []}
            for rep in range(args.repeats):
                for who in ("this", "base") if rep % 2 == 0 else ("base", "this"):
                    where = args.baseline if who == "base" else None
                    runs[who].append(_child(url, "plain", args.n, where))
                    bulk[who].append(_child(url, "bulk", args.n * 4, where))
                    for _ in range(3):  # cheap and noisy: three per repeat
                        script[who].append(_child(url, "script", args.n * 4, where))
            print("\nA/B of the plain path (no option used); ratios this/baseline: "
                  "jobs/s (median), cpu and redis (min)")  # fmt: skip
            print(head + "  ratios")
            print(_row("enqueue, baseline", runs["base"], None))
            print(_row("enqueue, this", runs["this"], runs["base"]))
            print(_row("enqueue_many, baseline", bulk["base"], None))
            print(_row("enqueue_many, this", bulk["this"], bulk["base"]))
            print("\nthe ENQUEUE script alone, one job per EVALSHA, pipelined: Redis us per call")
            for who in ("base", "this"):
                t = [r["redis_us_per_call"] for r in script[who]]
                print(f"  {who:<5} median {statistics.median(t):6.2f}  min {min(t):6.2f}")
            ratio = min(r["redis_us_per_call"] for r in script["this"]) / min(
                r["redis_us_per_call"] for r in script["base"]
            )
            print(f"  this/baseline (min) {ratio:.3f}")
        variants = ["plain", "unique-new", "unique-hit", "debounce-hit", "limited", "broadcast"]
        got: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        for _ in range(args.repeats):
            for v in variants:
                n = args.n // 10 if v == "broadcast" else args.n
                got[v].append(_child(url, v, n, None))
        print("\nsequential enqueues with an option; ratios to plain: jobs/s, cpu, redis")
        print(head + "  ratios")
        for v in variants:
            print(_row(v, got[v], None if v == "plain" else got["plain"]))


if __name__ == "__main__":
    main()
