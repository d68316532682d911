"""One redis-server against a Redis Cluster of 3 masters, same machine, same run.

    .venv/bin/python benchmarks/bench_cluster.py            # 30,000 jobs, 3 repeats
    .venv/bin/python benchmarks/bench_cluster.py --quick    # 12,000 jobs, 1 repeat

Starts its own servers on loopback ports: one ``redis-server`` (as ``bench_core.py``) and a
cluster of 3 masters (``tests/ha.py``'s ``LocalCluster``: ``redis-server --cluster-enabled
yes`` joined by ``redis-cli --cluster create``), both ``--save '' --appendonly no``. The app
has 6 queues; on the cluster their hash tags put 2 on each master. Every repeat runs each
scenario on both deployments, the order swapped every repeat:

  bulk     ``enqueue_many`` of N no-op jobs spread over the 6 queues (one call per 6,000),
           timed around the calls: jobs/s
  drain    those N jobs, then 2 worker processes, each ``python -m aioq worker
           bench_cluster_tasks:app --burst --concurrency 100 --log-level warning`` serving the
           6 queues, until both exit: jobs/s = N / (first job start .. last job end), and
           N / (spawn .. both exited) with start-up; Redis CPU (used_cpu_user + used_cpu_sys
           of every server, in ``INFO cpu``) per 1,000 jobs
  enqueue  M awaited ``await task.enqueue()``, one after the other, round-robin over the
           queues: jobs/s
  rpc      one idle worker process; M sequential ``await (await task.enqueue()).result()``:
           p50 and p90 ms

Prints versions and a table of medians (min-max over the repeats) and the cluster's ratio to
one server. ``--json PATH`` writes every run. The machine has 2 cores: the cluster's 3
servers, the 2 workers and the producer share them, so this measures what routing by slot
costs, not what more machines would give.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import as_installed  # before redis: compiled bytecode, no OpenTelemetry (see there)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import redis  # noqa: E402
from bench_core import pct, redis_server, versions  # noqa: E402

from aioq import App  # noqa: E402
from tests.ha import LocalCluster  # noqa: E402

APP = "bench"  # the queues' hash tags, and so their masters, depend on it
CONCURRENCY = 100
WORKERS = 2


class Deployment:
    def __init__(self, label: str, url: str, ports: list[int], queues: list[str]) -> None:
        self.label, self.url, self.ports, self.queues = label, url, ports, queues

    def flush(self) -> None:
        for port in self.ports:
            with redis.Redis(port=port) as r:
                r.flushall()

    def redis_cpu(self) -> float:
        total = 0.0
        for port in self.ports:
            with redis.Redis(port=port) as r:
                cpu = r.info("cpu")
                total += float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        return total


def make_app(dep: Deployment, name: str) -> App:
    app = App(name, redis_url=dep.url)
    for q in dep.queues:
        app.task(name=f"noop_{q}", queue=q)(_noop)
    return app


async def _noop() -> None:
    return None


def spawn(dep: Deployment, name: str, out: Path, burst: bool) -> subprocess.Popen[bytes]:
    env = as_installed.child_env(
        {**os.environ, "AIOQ_REDIS_URL": dep.url, "BENCH_APP": name,
         "BENCH_QUEUES": ",".join(dep.queues), "BENCH_OUT": str(out)}
    )  # fmt: skip
    cmd = [sys.executable, "-m", "aioq", "worker", "bench_cluster_tasks:app",
           "--concurrency", str(CONCURRENCY), "--log-level", "warning",
           *(["--burst"] if burst else [])]  # fmt: skip
    return subprocess.Popen(cmd, cwd=HERE, env=env, stdin=subprocess.DEVNULL)


def _rows(out: Path) -> list[list[str]]:
    """What each worker process wrote at its exit (bench_cluster_tasks.py), and clean up."""
    rows = [f.read_text().split() for f in out.iterdir()]
    shutil.rmtree(out, ignore_errors=True)
    return rows


async def run_bulk_and_drain(dep: Deployment, n: int) -> dict[str, float]:
    dep.flush()
    name = APP
    app = make_app(dep, name)
    tasks = [app.tasks[f"noop_{q}"] for q in dep.queues]
    calls = [tasks[i % len(tasks)].call() for i in range(n)]
    t0 = time.perf_counter()
    for i in range(0, n, 6000):
        await app.enqueue_many(calls[i : i + 6000])
    bulk = n / (time.perf_counter() - t0)
    await app.aclose()
    out = Path(tempfile.mkdtemp(prefix="aioq-bench-cluster-"))
    cpu0 = dep.redis_cpu()
    t0 = time.time()
    procs = [spawn(dep, name, out, burst=True) for _ in range(WORKERS)]
    for p in procs:
        if p.wait(300) != 0:
            raise RuntimeError(f"a worker exited with {p.returncode}")
    exited = time.time()
    cpu = dep.redis_cpu() - cpu0
    rows = _rows(out)
    first = min(float(r[0]) for r in rows)
    last = max(float(r[1]) for r in rows)
    ran = sum(int(r[2]) for r in rows)
    if ran != n:
        raise RuntimeError(f"{ran} jobs ran, {n} were enqueued")
    return {
        "bulk": bulk,
        "drain": n / (last - first),
        "drain_startup": n / (exited - t0),
        "redis_cpu_ms_per_1000": cpu / n * 1e6,
    }


async def run_enqueue_and_rpc(dep: Deployment, m: int, m_rpc: int) -> dict[str, float]:
    dep.flush()
    name = APP
    app = make_app(dep, name)
    tasks = [app.tasks[f"noop_{q}"] for q in dep.queues]
    await app.ping()
    t0 = time.perf_counter()
    for i in range(m):
        await tasks[i % len(tasks)].enqueue()
    seq = m / (time.perf_counter() - t0)
    dep.flush()
    out = Path(tempfile.mkdtemp(prefix="aioq-bench-cluster-"))
    worker = spawn(dep, name, out, burst=False)
    try:
        for i in range(50):  # warm up: the worker is up and every queue's subscription too
            await (await tasks[i % len(tasks)].enqueue()).result(timeout=30)
        lat = []
        for i in range(m_rpc):
            t = time.perf_counter()
            await (await tasks[i % len(tasks)].enqueue()).result(timeout=30)
            lat.append((time.perf_counter() - t) * 1000)
    finally:
        worker.terminate()
        worker.wait(30)
        shutil.rmtree(out, ignore_errors=True)
        await app.aclose()
    return {"enqueue": seq, "rpc_p50_ms": pct(lat, 0.5), "rpc_p90_ms": pct(lat, 0.9)}


METRICS = [
    ("bulk", "enqueue_many, jobs/s", True),
    ("enqueue", "awaited enqueue, jobs/s", True),
    ("drain", "drain, 2 workers, jobs/s", True),
    ("drain_startup", "  with start-up, jobs/s", True),
    ("redis_cpu_ms_per_1000", "Redis CPU ms / 1000 jobs", False),
    ("rpc_p50_ms", "enqueue -> result p50, ms", False),
    ("rpc_p90_ms", "enqueue -> result p90, ms", False),
]


def summary(runs: list[dict[str, Any]], label: str, key: str) -> tuple[float, float, float]:
    xs = [r[key] for r in runs if r["deployment"] == label]
    return statistics.median(xs), min(xs), max(xs)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30_000)
    ap.add_argument("--m", type=int, default=2_000, help="awaited enqueues")
    ap.add_argument("--m-rpc", type=int, default=500, help="round trips")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.n, args.m, args.m_rpc, args.repeats = 12_000, 1_000, 200, 1
    runs: list[dict[str, Any]] = []
    with redis_server("tcp", None) as single_url, LocalCluster(masters=3) as cluster:
        single_port = int(single_url.rsplit(":", 1)[1].split("/")[0])
        qs = [*cluster.queues_on_each_node(APP, "a"), *cluster.queues_on_each_node(APP, "b")]
        where = {q: cluster.owner(f"aioq:{{{APP}:{q}}}:") for q in qs}
        print("queue -> master port on the cluster:", where, flush=True)
        deployments = [
            Deployment("1 node", single_url, [single_port], qs),
            Deployment("cluster (3 masters)", cluster.url, cluster.ports, qs),
        ]
        info = versions(single_url)
        for rep in range(args.repeats):
            order = deployments if rep % 2 == 0 else deployments[::-1]
            for dep in order:
                row: dict[str, Any] = {"deployment": dep.label, "repeat": rep}
                row.update(await run_bulk_and_drain(dep, args.n))
                row.update(await run_enqueue_and_rpc(dep, args.m, args.m_rpc))
                runs.append(row)
                print(f"repeat {rep} {dep.label}: " + ", ".join(
                    f"{k} {v:,.1f}" for k, v in row.items() if isinstance(v, float)
                ), flush=True)  # fmt: skip
    print()
    for k, v in info.items():
        print(f"{k}: {v}")
    print(f"N={args.n:,} jobs over 6 queues, M={args.m:,} awaited enqueues, "
          f"{args.m_rpc} round trips, {args.repeats} repeat(s), medians (min-max)\n")  # fmt: skip
    labels = [d.label for d in deployments]
    print(f"| metric | {labels[0]} | {labels[1]} | cluster / 1 node |")
    print("|---|---|---|---|")
    for key, title, _higher_better in METRICS:
        one, two = summary(runs, labels[0], key), summary(runs, labels[1], key)
        cells = [f"{m:,.1f} ({lo:,.1f}-{hi:,.1f})" for m, lo, hi in (one, two)]
        print(f"| {title} | {cells[0]} | {cells[1]} | {two[0] / one[0]:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"versions": info, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
