"""aioq core benchmark against a raw redis-py asyncio + hiredis ceiling, in the same run.

    .venv/bin/python benchmarks/bench_core.py            # full: 20,000 jobs, 3 repeats (~2 min)
    .venv/bin/python benchmarks/bench_core.py --quick    # 5,000 jobs, 3 repeats (< 1 min)

Starts its own redis-server (TCP loopback 127.0.0.1 on a free port by default, ``--unix`` for a
unix socket through aioq.embedded.EmbeddedRedis, ``--redis-url`` to use a running server; it
is FLUSHALL'd), then, every repeat interleaving aioq and raw (order rotated per repeat):

  a. enqueue-seq   N awaited ``await noop.enqueue()``  vs  N awaited XADD
  b. enqueue-bulk  ``await app.enqueue_many([...N])``   vs  one pipeline of N XADDs
  c. drain         the N jobs left by (a), one worker subprocess
                   ``python -m aioq worker bench_tasks:app --concurrency 100``  vs
                   ``raw_worker.py`` (XREADGROUP COUNT 100 + one XACK per batch);
                   jobs/s from first job start to last job finish (excl. start-up) and from
                   spawn to last finish (incl. start-up); also start-up and stop time
  d. latency       idle worker, warmed with one job; M jobs enqueued 5 ms apart, each records
                   its start; latency = start - time.time() taken just before the enqueue
  e. startup       spawn of a worker with one job queued to that job's start

Tasks record times in process and a flusher ships them to Redis every 10 ms (bench_record.py).
Prints versions, machine, and a table of median (min-max) over the repeats with the ratio of
aioq's median to raw's median and the target. ``--json PATH`` writes every single run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import as_installed

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import redis  # noqa: E402
import redis.asyncio as aredis  # noqa: E402

RAW_STREAM = "raw:tasks"
K_DONE, K_FIRST_START, K_LAST, K_LAT, K_IMPORTED = (
    "bench:done",
    "bench:first_start",
    "bench:last",
    "bench:lat",
    "bench:imported",
)

TARGETS = {
    "enqueue-seq": ("ratio", 0.85),
    "enqueue-bulk": ("ratio", 0.5),
    "drain-steady": ("min", 25_000.0),
    "latency-p50": ("max", 0.6),
    "startup": ("max", 0.3),
}


# -- redis server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server(mode: str, url: str | None) -> Iterator[str]:
    """Yield the URL of a private redis-server (tcp loopback or unix socket), or ``url``."""
    if url:
        yield url
        return
    if mode == "unix":
        from aioq.embedded import EmbeddedRedis

        with EmbeddedRedis() as server:
            yield server.url
        return
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    workdir = Path(tempfile.mkdtemp(prefix="aioq-bench-redis-"))
    port = free_port()
    cmd = [
        exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
        "--daemonize", "no", "--maxclients", "10000", "--dir", str(workdir),
        "--logfile", str(workdir / "redis.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        r = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {cmd}") from None
                time.sleep(0.02)
        r.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


# -- results --------------------------------------------------------------------------------


@dataclass
class Results:
    runs: list[dict[str, Any]] = field(default_factory=list)

    def add(self, impl: str, scenario: str, rep: int, **values: Any) -> dict[str, Any]:
        rec = {"impl": impl, "scenario": scenario, "rep": rep, **values}
        self.runs.append(rec)
        return rec

    def values(self, impl: str, scenario: str, key: str) -> list[float]:
        return [
            r[key]
            for r in self.runs
            if r["impl"] == impl and r["scenario"] == scenario and r.get(key) is not None
        ]


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


T0 = time.monotonic()


# -- the benchmark --------------------------------------------------------------------------


class Bench:
    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.url = url
        self.args = args
        self.n: int = args.n
        self.conc: int = args.concurrency
        self.results = Results()
        self.r = aredis.from_url(url)  # control connection (flush, polling)
        os.environ["AIOQ_REDIS_URL"] = url
        import bench_tasks

        bench_tasks.app.rebind(redis_url=url)
        self.bt = bench_tasks
        self.raw = aredis.from_url(url)  # the ceiling's producer client
        self.env = as_installed.child_env(
            {**os.environ, "AIOQ_REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
        )
        if args.trace:
            self.env["BENCH_TRACE"] = "1"
        self.logdir = Path(tempfile.mkdtemp(prefix="aioq-bench-logs-"))

    async def aclose(self) -> None:
        await self.bt.app.aclose()
        await self.raw.aclose()
        await self.r.aclose()

    # -- processes --

    def worker_cmd(self, impl: str, conc: int) -> list[str]:
        if impl == "aioq":
            return [
                sys.executable, "-m", "aioq", "worker", "bench_tasks:app",
                "--concurrency", str(conc), "--log-level", "warning",
            ]  # fmt: skip
        if impl == "aioq-api":
            return [sys.executable, str(HERE / "api_worker.py"), "--concurrency", str(conc)]
        return [sys.executable, str(HERE / "raw_worker.py"), "--concurrency", str(conc)]

    def spawn(self, impl: str, conc: int, tag: str, env: dict[str, str] | None = None) -> Any:
        out = open(self.logdir / f"{tag}.log", "ab")  # noqa: SIM115 - handed to the child
        cmd = self.worker_cmd(impl, conc)
        if self.args.worker_prefix and impl != "raw":
            cmd = [*self.args.worker_prefix.split(), *cmd]
        p = subprocess.Popen(
            cmd, cwd=HERE, env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT
        )
        out.close()
        return p

    async def stop(self, p: Any) -> float | None:
        t = time.monotonic()
        p.send_signal(signal.SIGTERM)
        deadline = t + 15
        while p.poll() is None:
            if time.monotonic() > deadline:
                p.kill()
                p.wait()
                return None
            await asyncio.sleep(0.005)
        return time.monotonic() - t

    async def wait_done(self, target: int, p: Any, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        n = 0
        while time.monotonic() < deadline:
            v = await self.r.get(K_DONE)
            n = int(v) if v else 0
            if n >= target:
                return n
            if p.poll() is not None:
                raise RuntimeError(f"worker exited (rc {p.returncode}) after {n}/{target} jobs")
            await asyncio.sleep(0.01)
        raise RuntimeError(f"timeout: {n}/{target} jobs done in {timeout:.0f}s")

    async def fget(self, key: str) -> float | None:
        v = await self.r.get(key)
        return float(v) if v is not None else None

    # -- producers --

    async def enqueue_seq(self, impl: str, n: int) -> float:
        if impl.startswith("aioq"):
            await self.bt.app.ping()
            enqueue = self.bt.noop.enqueue
            t0 = time.perf_counter()
            for _ in range(n):
                await enqueue()
            return time.perf_counter() - t0
        r = self.raw
        await r.ping()
        t0 = time.perf_counter()
        for i in range(n):
            await r.xadd(RAW_STREAM, {"t": "noop", "i": i})
        return time.perf_counter() - t0

    async def enqueue_bulk(self, impl: str, n: int) -> float:
        if impl == "aioq":
            app, noop = self.bt.app, self.bt.noop
            await app.ping()
            t0 = time.perf_counter()
            await app.enqueue_many([noop.call() for _ in range(n)])
            return time.perf_counter() - t0
        r = self.raw
        await r.ping()
        t0 = time.perf_counter()
        async with r.pipeline(transaction=False) as p:
            for i in range(n):
                p.xadd(RAW_STREAM, {"t": "noop", "i": i})
            await p.execute()
        return time.perf_counter() - t0

    async def enqueue_lat(self, impl: str, i: int) -> None:
        if impl == "aioq":
            await self.bt.lat.enqueue(i)
        else:
            await self.raw.xadd(RAW_STREAM, {"t": "lat", "i": i})

    # -- scenarios --

    async def sc_enqueue_and_drain(self, impl: str, rep: int) -> None:
        n = self.n
        await self.r.flushall()
        dt = await self.enqueue_seq(impl, n)
        self.results.add(impl, "enqueue-seq", rep, value=n / dt, seconds=dt)
        log(f"rep {rep} {impl:>4} enqueue-seq   {n / dt:>10,.0f} /s")
        if "drain" not in self.args.scenarios:
            return
        tag = f"{impl}.drain.r{rep}"
        t_spawn = time.time()
        p = self.spawn(impl, self.conc, tag)
        try:
            await self.wait_done(n, p)
            first, last = await self.fget(K_FIRST_START), await self.fget(K_LAST)
            await asyncio.sleep(0.2)  # late duplicates, final writes
            done_after = int(await self.r.get(K_DONE) or 0)
        finally:
            stop_s = await self.stop(p)
        assert first is not None
        assert last is not None
        left = await self.stream_left(impl) if impl == "aioq" else None  # raw never XDELs
        rec = self.results.add(
            impl, "drain", rep,
            value=n / (last - t_spawn), steady=n / (last - first), startup=first - t_spawn,
            stop_s=stop_s, duplicates=done_after - n, left_in_stream=left,
        )  # fmt: skip
        log(
            f"rep {rep} {impl:>4} drain         {rec['steady']:>10,.0f} /s excl. start-up, "
            f"{rec['value']:,.0f} /s incl.; start-up {rec['startup']:.3f}s, "
            f"stop {stop_s if stop_s is None else round(stop_s, 3)}s, left {left}"
        )

    async def stream_left(self, impl: str) -> int:
        key = self.bt.app.keys().stream if impl == "aioq" else RAW_STREAM
        n: int = await self.r.xlen(key)
        return n

    async def sc_bulk(self, impl: str, rep: int) -> None:
        n = self.n
        await self.r.flushall()
        dt = await self.enqueue_bulk(impl, n)
        self.results.add(impl, "enqueue-bulk", rep, value=n / dt, seconds=dt)
        log(f"rep {rep} {impl:>4} enqueue-bulk  {n / dt:>10,.0f} /s")

    async def sc_latency(self, impl: str, rep: int) -> None:
        n, gap = self.args.n_lat, self.args.lat_gap
        await self.r.flushall()
        p = self.spawn(impl, self.conc, f"{impl}.latency.r{rep}")
        try:
            await self.enqueue_lat(impl, -1)
            await self.wait_done(1, p, timeout=30)
            await asyncio.sleep(0.3)
            t0s = []
            for i in range(n):
                t = time.time()
                await self.enqueue_lat(impl, i)
                t0s.append(t)
                await asyncio.sleep(gap)
            await self.wait_done(n + 1, p, timeout=30)
            await asyncio.sleep(0.05)
            raw = await self.r.lrange(K_LAT, 0, -1)
        finally:
            await self.stop(p)
        starts: dict[int, list[float]] = {}
        for item in raw:
            i_s, *ts = item.decode().split()
            starts.setdefault(int(i_s), [float(t) for t in ts])
        lats = [(starts[i][0] - t0s[i]) * 1000 for i in range(n) if i in starts]
        rec = self.results.add(
            impl, "latency", rep, value=pct(lats, 0.5), p99=pct(lats, 0.99), max=max(lats),
            mean=statistics.fmean(lats), lost=n - len(lats),
        )  # fmt: skip
        traced = [(t0s[i], *starts[i]) for i in range(n) if i in starts and len(starts[i]) == 3]
        if traced:  # --trace: enqueue -> XREADGROUP delivered -> start script done -> task
            rec["to_delivered"] = statistics.median((a - e) * 1000 for e, _s, a, _b in traced)
            rec["start_rt"] = statistics.median((b - a) * 1000 for _e, _s, a, b in traced)
            rec["to_task"] = statistics.median((s - b) * 1000 for _e, s, _a, b in traced)
            log(
                f"rep {rep} {impl:>4} latency split (medians): enqueue->delivered "
                f"{rec['to_delivered']:.3f} ms, start script {rec['start_rt']:.3f} ms, "
                f"-> task {rec['to_task']:.3f} ms"
            )
        log(
            f"rep {rep} {impl:>4} latency       p50 {rec['value']:.3f} ms, "
            f"p99 {rec['p99']:.3f} ms, max {rec['max']:.2f} ms"
        )

    async def sc_startup(self, impl: str, rep: int) -> None:
        await self.r.flushall()
        await self.enqueue_seq(impl, 1)
        t_spawn = time.time()
        p = self.spawn(impl, self.conc, f"{impl}.startup.r{rep}")
        try:
            await self.wait_done(1, p, timeout=30)
            first = await self.fget(K_FIRST_START)
            imported = await self.fget(K_IMPORTED)
        finally:
            await self.stop(p)
        assert first is not None
        assert imported is not None
        self.results.add(
            impl, "startup", rep, value=first - t_spawn, imports=imported - t_spawn,
            to_first_job=first - imported,
        )  # fmt: skip
        log(
            f"rep {rep} {impl:>4} startup       {first - t_spawn:.3f} s (interpreter + imports "
            f"{imported - t_spawn:.3f} s, then to the first job {first - imported:.3f} s)"
        )

    async def run(self) -> None:
        sc = self.args.scenarios
        impls = ["aioq", "raw"]
        for rep in range(1, self.args.repeats + 1):
            order = impls if rep % 2 else impls[::-1]  # alternate who goes first
            for impl in order:
                if "enqueue-seq" in sc or "drain" in sc:
                    await self.sc_enqueue_and_drain(impl, rep)
                if "enqueue-bulk" in sc:
                    await self.sc_bulk(impl, rep)
                if "latency" in sc:
                    await self.sc_latency(impl, rep)
                if "startup" in sc:
                    await self.sc_startup(impl, rep)
            if "startup" in sc:
                await self.sc_startup("aioq-api", rep)
        await self.r.flushall()


# -- report ---------------------------------------------------------------------------------


def versions(url: str) -> dict[str, str]:
    import hiredis

    r = redis.Redis.from_url(url)
    server = r.info("server")
    r.close()
    import aioq

    src = Path(aioq.__file__).resolve().parent.parent  # PYTHONPATH may point at a snapshot
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--", "aioq"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        if dirty:
            commit += " (aioq/ modified in the working tree)"
    except (OSError, subprocess.CalledProcessError):
        marker = src / "AIOQ_COMMIT"  # written next to a `git archive` snapshot
        commit = marker.read_text().strip() if marker.exists() else "unknown"
    if src != ROOT:
        commit += f", imported from {src}"
    return {
        "python": platform.python_version(),
        "redis-server": str(server.get("redis_version")),
        "redis-py": redis.__version__,
        "hiredis": getattr(hiredis, "__version__", "?"),
        "aioq": f"{metadata.version('aioq-redis')} @ {commit}",
        "nproc": str(os.cpu_count()),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("ms", "s"):
        return f"{v:.3f}"
    return f"{v:,.0f}"


def report(res: Results, args: argparse.Namespace, info: dict[str, str], url: str) -> str:
    rows: list[tuple[str, str, str, str, str | None]] = [
        # label, scenario, key, unit, target key
        (f"a. enqueue, {args.n} sequentially awaited", "enqueue-seq", "value", "jobs/s",
         "enqueue-seq"),
        (f"b. enqueue_many of {args.n} vs pipeline", "enqueue-bulk", "value", "jobs/s",
         "enqueue-bulk"),
        (f"c. drain {args.n}, conc {args.concurrency}, excl. start-up", "drain", "steady",
         "jobs/s", "drain-steady"),
        ("c. drain, incl. start-up (spawn to last)", "drain", "value", "jobs/s", None),
        ("c. drain: start-up with backlog (spawn to 1st)", "drain", "startup", "s", None),
        ("c. drain: stop after SIGTERM", "drain", "stop_s", "s", None),
        (f"d. latency p50 ({args.n_lat} jobs, {args.lat_gap * 1000:g} ms apart)", "latency",
         "value", "ms", "latency-p50"),
        ("d. latency p99", "latency", "p99", "ms", None),
        ("d. (--trace) enqueue -> XREADGROUP delivered", "latency", "to_delivered", "ms", None),
        ("d. (--trace) start script round trip", "latency", "start_rt", "ms", None),
        ("d. (--trace) start reply -> task running", "latency", "to_task", "ms", None),
        ("e. start-up: spawn to first job (1 queued)", "startup", "value", "s", "startup"),
        ("e. of which interpreter + imports", "startup", "imports", "s", None),
        ("e. of which connect ... first job start", "startup", "to_first_job", "s", None),
        ("e'. the same, aioq Worker via the API, not the CLI", "startup", "value", "s", "@api"),
    ]  # fmt: skip
    L = []
    L.append(
        f"aioq core benchmark: redis {info['redis-server']} at {url.split('://')[0]} "
        f"({'unix socket' if url.startswith('unix') else '127.0.0.1 loopback'}), "
        f"{args.repeats} repeats, median (min-max)"
    )
    L.append(
        f"python {info['python']}, redis-py {info['redis-py']}, hiredis {info['hiredis']}, "
        f"aioq {info['aioq']}"
    )
    L.append(
        f"machine: nproc {info['nproc']}, kernel {info['kernel']} {info['machine']}, "
        f"loadavg at start {info['loadavg']}"
    )
    L.append("")
    head = ("scenario", "unit", "aioq median (min-max)", "raw median (min-max)", "ratio",
            "target", "ok")  # fmt: skip
    table = [head]
    for label, scen, key, unit, tkey in rows:
        cells = []
        meds = {}
        api = tkey == "@api"
        if api:
            tkey = None
        for impl in ("aioq", "raw"):
            xs = res.values("aioq-api" if api and impl == "aioq" else impl, scen, key)
            meds[impl] = med(xs)
            if xs:
                cells.append(f"{fmt(med(xs), unit)} ({fmt(min(xs), unit)}-{fmt(max(xs), unit)})")
            else:
                cells.append("-")
        a, b = meds["aioq"], meds["raw"]
        if a is None and b is None:
            continue  # e.g. the --trace rows of a run without --trace
        ratio = f"{a / b:.2f}" if a is not None and b else "-"
        target, ok = "", ""
        if tkey and a is not None:
            kind, t = TARGETS[tkey]
            if kind == "ratio":
                target = f"ratio >= {t:g}"
                good = b is not None and a / b >= t
            elif kind == "min":
                target = f">= {t:,.0f}"
                good = a >= t
            else:
                target = f"<= {t:g}"
                good = a <= t
            ok = "yes" if good else "NO"
        table.append((label, unit, cells[0], cells[1], ratio, target, ok))
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for j, row in enumerate(table):
        L.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if j == 0:
            L.append("  ".join("-" * w for w in widths))
    notes = []
    for r in res.runs:
        if r.get("duplicates"):
            notes.append(f"{r['impl']} {r['scenario']} rep {r['rep']}: {r['duplicates']} dups")
        if r.get("lost"):
            notes.append(f"{r['impl']} {r['scenario']} rep {r['rep']}: {r['lost']} lost")
        if r.get("left_in_stream"):
            notes.append(
                f"{r['impl']} {r['scenario']} rep {r['rep']}: {r['left_in_stream']} "
                "entries left in the stream after the drain"
            )
    if notes:
        L.append("")
        L.extend("note: " + n for n in notes)
    L.append("")
    L.append("ratio = aioq median / raw median (for latency and times: how many times raw's)")
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5,000 jobs, 200 latency samples")
    ap.add_argument("--unix", action="store_true", help="redis on a unix socket (EmbeddedRedis)")
    ap.add_argument("--redis-url", help="use this running Redis (it is FLUSHALL'd!)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, help="jobs for enqueue/drain (20,000; quick 5,000)")
    ap.add_argument("--n-lat", type=int, help="latency samples (500; quick 200)")
    ap.add_argument("--lat-gap", type=float, default=0.005)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument(
        "--scenarios",
        default="enqueue-seq,drain,enqueue-bulk,latency,startup",
        help="comma-separated subset of enqueue-seq,drain,enqueue-bulk,latency,startup",
    )
    ap.add_argument("--json", help="write every run (and versions) to this file")
    ap.add_argument(
        "--trace", action="store_true", help="split aioq's latency (patches Scripts.start)"
    )
    ap.add_argument(
        "--worker-prefix", default="", help="prefix for the aioq worker command (e.g. py-spy)"
    )
    args = ap.parse_args()
    args.n = args.n or (5_000 if args.quick else 20_000)
    args.n_lat = args.n_lat or (200 if args.quick else 500)
    args.scenarios = set(args.scenarios.split(","))

    with redis_server("unix" if args.unix else "tcp", args.redis_url) as url:
        info = versions(url)

        async def go() -> Results:
            b = Bench(url, args)
            try:
                await b.run()
            finally:
                await b.aclose()
            log(f"worker logs in {b.logdir}")
            return b.results

        res = asyncio.run(go())
    text = report(res, args, info, url)
    print()
    print(text)
    if args.json:
        cmd = " ".join([Path(sys.executable).name, *sys.argv])
        Path(args.json).write_text(
            json.dumps({"command": cmd, "versions": info, "runs": res.runs}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
