"""Every core: the default ``aioq worker --burst`` drain as one process and as ``--processes 2``,
beside the raw ceiling as one and two processes, in one run, with where the CPU goes.

    .venv/bin/python benchmarks/bench_processes.py          # 100,000 + 20,000 jobs, 3 repeats
    .venv/bin/python benchmarks/bench_processes.py --quick  # 20,000 + 5,000 jobs, 1 repeat

Starts its own redis-server (TCP loopback, as ``bench_core.py``; ``--redis-url`` to use a
running one, which is FLUSHALL'd). Every repeat runs each variant once, order rotated:

  cli-1   N no-op jobs queued (``enqueue_many``), then the default command
          ``python -m aioq worker bench_tasks:app --burst`` (concurrency 100, logs at info,
          to a file) until it exits by itself: one worker process, no supervisor
  cli-2   the same with ``--processes 2``: a supervisor and two worker processes
  raw-1   N entries XADDed, then ``raw_worker.py`` (the ceiling of ``bench_core.py``: bare
          redis-py XREADGROUP + XACK, no results, leases or retries), stopped once done
  raw-2   two ``raw_worker.py`` processes on the same stream
  cpu-1   cli-1 draining M jobs that each hold the CPU for ``--spin-us`` (300) microseconds
          (``bench_tasks.spin``): jobs whose cost is their own Python, not Redis
  cpu-2   the same with ``--processes 2``

Tasks count what they finish in process and ship the count to Redis every 10 ms
(``bench_record.py``). This process polls that count every 10 ms; the measured window runs
from the first count it sees to the poll that sees all N, and jobs/s = jobs finished in the
window / its length (so start-up is out). Over the same window it reads the CPU time used
by redis-server (``INFO cpu``: used_cpu_user + used_cpu_sys) and by every Python process of
the variant (``/proc/PID/stat`` utime + stime of each spawned process and its children),
and prints them as % of one core and as CPU microseconds per job: the bottleneck is where a
core is full (redis-server is one thread; the machine has ``nproc`` cores for everything).

Prints versions and a table of medians (min-max) over the repeats. ``--json PATH`` writes
every single run.
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
from bench_core import RAW_STREAM, med, redis_server, versions  # noqa: E402
from bench_worker import _table  # noqa: E402

K_DONE = "bench:done"
VARIANTS = ("cli-1", "cli-2", "raw-1", "raw-2", "cpu-1", "cpu-2")
LABELS = {
    "cli-1": "aioq worker bench_tasks:app --burst",
    "cli-2": "aioq worker bench_tasks:app --burst --processes 2",
    "raw-1": "raw ceiling, 1 process",
    "raw-2": "raw ceiling, 2 processes",
    "cpu-1": "aioq worker ... --burst, CPU jobs",
    "cpu-2": "aioq worker ... --burst --processes 2, CPU jobs",
}
TICK = os.sysconf("SC_CLK_TCK")
POLL = 0.01


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


T0 = time.monotonic()


# -- CPU accounting -----------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(state, parent pid, user + system CPU seconds) of ``pid``; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def process_tree(roots: list[int]) -> list[int]:
    """The pids under ``roots`` (a supervisor's children too), roots included."""
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (s := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = s[1]
    tree, grew = set(roots), True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return sorted(tree)


def python_cpu(tree: list[int]) -> dict[int, float] | None:
    """CPU seconds of each process of ``tree``; None once one of them has exited (its time
    is no longer readable, so a window must end before)."""
    out = {}
    for pid in tree:
        s = _stat(pid)
        if s is None or s[0] in "ZX":
            return None
        out[pid] = s[2]
    return out


async def redis_cpu(r: Any) -> float:
    info = await r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def own_cpu() -> float:
    s = _stat(os.getpid())
    return 0.0 if s is None else s[2]


def machine_busy() -> float:
    """CPU seconds every core has spent busy since boot (/proc/stat: all but idle, iowait)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK


# -- the runs -----------------------------------------------------------------------------


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
        self.logdir = Path(tempfile.mkdtemp(prefix="aioq-bench-processes-"))
        self.runs: list[dict[str, Any]] = []

    def commands(self, variant: str) -> list[list[str]]:
        aioq = [sys.executable, "-m", "aioq", "worker", "bench_tasks:app", "--burst"]
        raw = [sys.executable, str(HERE / "raw_worker.py"), "--concurrency", "100"]
        return {
            "cli-1": [aioq],
            "cli-2": [[*aioq, "--processes", "2"]],
            "raw-1": [raw],
            "raw-2": [raw, raw],
            "cpu-1": [aioq],
            "cpu-2": [[*aioq, "--processes", "2"]],
        }[variant]

    def jobs(self, variant: str) -> int:
        n: int = self.args.m if variant.startswith("cpu") else self.args.n
        return n

    async def fill(self, variant: str, n: int) -> None:
        await self.r.flushall()
        if not variant.startswith("raw"):
            app = self.bt.app
            spin, us = variant.startswith("cpu"), self.args.spin_us
            for i in range(0, n, 10_000):
                k = min(10_000, n - i)
                calls = [self.bt.spin.call(us) if spin else self.bt.noop.call() for _ in range(k)]
                await app.enqueue_many(calls)
            return
        for i in range(0, n, 10_000):
            async with self.r.pipeline(transaction=False) as p:
                for j in range(i, min(n, i + 10_000)):
                    p.xadd(RAW_STREAM, {"t": "noop", "i": j})
                await p.execute()

    async def drain(self, variant: str, rep: int) -> None:
        n = self.jobs(variant)
        await self.fill(variant, n)
        procs = []
        with open(self.logdir / f"{variant}.r{rep}.log", "ab") as out:  # noqa: ASYNC230
            for cmd in self.commands(variant):
                procs.append(
                    await asyncio.create_subprocess_exec(
                        *cmd, cwd=HERE, env=self.env, stdout=out, stderr=out
                    )
                )
        roots = [p.pid for p in procs]
        try:
            samples = await self.sample(variant, roots, n)
            if not variant.startswith("raw"):  # burst: it exits by itself (the supervisor too)
                codes = [await asyncio.wait_for(p.wait(), 60) for p in procs]
                if codes != [0] * len(procs):
                    raise RuntimeError(f"{variant}: exit codes {codes}")
                left = await self.r.xlen(self.bt.app.keys().stream)
                if left:
                    raise RuntimeError(f"{variant}: {left} entries left in the stream")
        finally:
            for p in procs:
                if p.returncode is None:
                    p.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(p.wait(), 30)
        # the window: from the first sample (jobs finished) to the last one whose count grew
        # (a burst worker's final count may reach Redis only as it exits)
        last = max(i for i in range(len(samples)) if samples[i][1] > samples[max(0, i - 1)][1])
        (t0, d0, r0, py0, own0, m0), (t1, d1, r1, py1, own1, m1) = samples[0], samples[last]
        secs, jobs = t1 - t0, d1 - d0
        if jobs < n / 2:
            raise RuntimeError(f"{variant}: the window holds {jobs} jobs of {n}")
        per_proc = {pid: cpu - py0[pid] for pid, cpu in py1.items()}
        python = sum(per_proc.values())
        sup = variant.endswith("-2") and not variant.startswith("raw")  # its root: the supervisor
        workers = [cpu for pid, cpu in per_proc.items() if not (sup and pid in roots)]
        rec = {
            "variant": variant, "rep": rep, "jobs_per_s": jobs / secs, "window_s": secs,
            "window_jobs": jobs, "redis_cpu": (r1 - r0) / secs, "python_cpu": python / secs,
            "busiest_python": max(workers, default=0.0) / secs,
            "supervisor_cpu": sum(per_proc[pid] for pid in roots) / secs if sup else 0.0,
            "harness_cpu": (own1 - own0) / secs, "machine_cpu": (m1 - m0) / secs,
            "redis_us_per_job": (r1 - r0) / jobs * 1e6, "python_us_per_job": python / jobs * 1e6,
        }  # fmt: skip
        self.runs.append(rec)
        log(
            f"rep {rep} {variant}: {rec['jobs_per_s']:>8,.0f} jobs/s over {secs:.2f}s; CPU "
            f"redis {rec['redis_cpu']:.0%}, python {rec['python_cpu']:.0%} (busiest process "
            f"{rec['busiest_python']:.0%}), harness {rec['harness_cpu']:.0%}, machine "
            f"{rec['machine_cpu']:.0%}"
        )

    async def sample(self, variant: str, roots: list[int], n: int) -> list[Any]:
        """(time, jobs done, redis CPU, {pid: CPU}, harness CPU, machine CPU) every ``POLL``
        seconds from the first jobs finished until all are, or a process exits."""
        samples: list[Any] = []
        tree: list[int] | None = None
        deadline = time.monotonic() + 300
        while True:
            await asyncio.sleep(POLL)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{variant}: not done in 300 s")
            done = int(await self.r.get(K_DONE) or 0)
            if tree is None:
                if not done:
                    continue
                tree = process_tree(roots)  # every process has started: jobs finished
            cpu = python_cpu(tree)
            if cpu is None:  # one exited: the window ends at the sample before
                break
            samples.append((time.monotonic(), done, await redis_cpu(self.r), cpu,
                            own_cpu(), machine_busy()))  # fmt: skip
            if done >= n:
                break
        if len(samples) < 2:
            raise RuntimeError(f"{variant}: too short to measure; use a larger --n")
        return samples

    async def run(self) -> None:
        for rep in range(1, self.args.repeats + 1):
            k = (rep - 1) % len(VARIANTS)
            for v in VARIANTS[k:] + VARIANTS[:k]:
                await self.drain(v, rep)
        await self.r.flushall()
        await self.bt.app.aclose()
        await self.r.aclose()


def report(runs: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, str]) -> str:
    def vals(variant: str, key: str) -> list[float]:
        return [r[key] for r in runs if r["variant"] == variant]

    def m(variant: str, key: str) -> float:
        v = med(vals(variant, key))
        assert v is not None
        return v

    def cell(variant: str, key: str, f: str) -> str:
        xs = vals(variant, key)
        return f"{med(xs):{f}} ({min(xs):{f}}-{max(xs):{f}})"

    cores = int(info["nproc"])
    L = [
        f"aioq processes benchmark: redis {info['redis-server']}, {args.repeats} repeats, "
        "median (min-max)",
        f"python {info['python']}, redis-py {info['redis-py']}, hiredis {info['hiredis']}, "
        f"aioq {info['aioq']}",
        f"machine: nproc {cores}, kernel {info['kernel']}, loadavg at start {info['loadavg']}",
        "",
        f"drain, concurrency 100 per process: {args.n:,} no-op jobs (cli, raw) and {args.m:,} "
        f"jobs holding the CPU {args.spin_us} us each (cpu); CPU as % of one core over the "
        f"measured window ({cores} cores = {cores * 100}%)",
    ]
    rows: list[tuple[str, ...]] = [
        ("variant", "jobs/s", "vs its 1 process", "vs raw 1", "redis CPU", "python CPU",
         "busiest py", "redis us/job", "python us/job")
    ]  # fmt: skip
    for v in VARIANTS:
        one = v[:-1] + "1"
        rows.append((
            LABELS[v], cell(v, "jobs_per_s", ",.0f"),
            f"{m(v, 'jobs_per_s') / m(one, 'jobs_per_s'):.2f}",
            "-" if v.startswith("cpu") else f"{m(v, 'jobs_per_s') / m('raw-1', 'jobs_per_s'):.2f}",
            f"{m(v, 'redis_cpu'):.0%}", f"{m(v, 'python_cpu'):.0%}",
            f"{m(v, 'busiest_python'):.0%}",
            f"{m(v, 'redis_us_per_job'):.1f}", f"{m(v, 'python_us_per_job'):.1f}",
        ))  # fmt: skip
    L.extend(_table(rows))
    L.append("")
    L.append(f"supervisor CPU (cli-2): {m('cli-2', 'supervisor_cpu'):.1%}; this harness "
             f"(polling every {POLL * 1000:.0f} ms): {m('cli-2', 'harness_cpu'):.0%}")  # fmt: skip
    L.append("")
    L.append(
        "where the bottleneck sits: the jobs/s each resource allows at the CPU per job "
        "measured (redis-server, one thread: 1 s / its us per job; the Python processes: "
        f"processes x 1 s / their us per job; the {cores} cores: {cores} s / the us per job of "
        "both), beside the measured rate and how busy the machine was (other processes' share "
        "included: a shared machine's other load takes cores from this run)"
    )
    rows = [("variant", "redis allows", "python allows", "cores allow", "measured",
             "machine busy", "of which others")]  # fmt: skip
    for v in VARIANTS:
        procs = 2 if v.endswith("-2") else 1
        redis_us, python_us = m(v, "redis_us_per_job"), m(v, "python_us_per_job")
        ours = m(v, "redis_cpu") + m(v, "python_cpu") + m(v, "harness_cpu")
        busy = m(v, "machine_cpu")
        rows.append((
            LABELS[v], f"{1e6 / redis_us:,.0f}", f"{procs * 1e6 / python_us:,.0f}",
            f"{cores * 1e6 / (redis_us + python_us):,.0f}", f"{m(v, 'jobs_per_s'):,.0f}",
            f"{busy / cores:.0%}", f"{max(0.0, busy - ours) / cores:.0%}",
        ))  # fmt: skip
    L.extend(_table(rows))
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20,000 jobs, 1 repeat")
    ap.add_argument("--redis-url", help="use this running Redis (it is FLUSHALL'd!)")
    ap.add_argument("--repeats", type=int, help="3; quick 1")
    ap.add_argument("--n", type=int, help="jobs per drain (100,000; quick 20,000)")
    ap.add_argument("--m", type=int, help="CPU jobs per drain (20,000; quick 5,000)")
    ap.add_argument("--spin-us", type=int, default=300, help="CPU per CPU job (us, 300)")
    ap.add_argument("--json", help="write every run (and versions) to this file")
    args = ap.parse_args()
    args.n = args.n or (20_000 if args.quick else 100_000)
    args.m = args.m or (5_000 if args.quick else 20_000)
    args.repeats = args.repeats or (1 if args.quick else 3)
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
