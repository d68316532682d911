"""Soak: many jobs of mixed durations through worker processes under continuous chaos.

    .venv/bin/python benchmarks/soak.py                 # 20,000 jobs, 3 workers, ~3 min
    .venv/bin/python benchmarks/soak.py --jobs 3000 --kills 6 --restarts 1 --spread 25

Starts its own redis-server on a TCP loopback port with the append-only file on
(``appendfsync always``, so every write Redis acknowledged survives a SIGKILL of Redis), and
``--workers`` ``aioq worker tests.apps.soak:app`` subprocesses (visibility timeout
``--vt``). A producer enqueues the jobs over ``--spread`` seconds (by name, with explicit job
ids, retrying an enqueue that raised: it is idempotent on the id) while a chaos loop, at
random moments over the same time:

* SIGKILLs a random worker ``--kills`` times, starting a replacement at once;
* SIGSTOPs a random worker ``--stops`` times for its lease and 2 s more, then SIGCONTs it
  (its pending entries are sampled all along: its parked read may still be delivered some);
* SIGKILLs redis-server ``--restarts`` times and starts it again on the same port and data;
* kills every client connection (CLIENT KILL TYPE normal, then TYPE pubsub) ``--client-kills``
  times.

At every such fault it records, from Redis, the jobs in flight: the pending entries (XPENDING)
of the killed or stopped worker's consumer, or of every consumer for a Redis restart or a
connection kill. Each task records each of its runs in Redis (``tests/apps/soak.py``), so the
count survives the worker that ran it. Afterwards it checks and prints: no job lost (each
ended ``succeeded`` with its expected result), each ran at least once, every job that ran
more than once was in flight at a fault (and how many did, against how many were in flight),
no job left in a non-terminal state, the streams empty (XLEN 0, XPENDING 0), and that the
``result()`` waiters sampled along the way all got their results. Exit code 1 if any check
fails. ``run_soak`` is what ``tests/test_soak.py`` runs, scaled down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402
from redis.exceptions import RedisError, ResponseError  # noqa: E402

from aioq import App, RedisUnavailable  # noqa: E402
from aioq.keys import GROUP  # noqa: E402
from tests.apps.soak import runs_key, runs_per_job  # noqa: E402
from tests.helpers import WorkerProcess  # noqa: E402

TARGET = "tests.apps.soak:app"
TERMINAL = {b"succeeded", b"failed", b"cancelled", b"expired"}


@dataclass
class Config:
    jobs: int = 20_000
    workers: int = 3
    concurrency: int = 50
    vt: float = 3.0
    kills: int = 20
    stops: int = 1
    restarts: int = 2
    client_kills: int = 4
    spread: float = 90.0  # seconds over which jobs are enqueued and faults injected
    drain_timeout: float = 180.0
    seed: int = 1


@dataclass
class Fault:
    at: float  # seconds since the start
    kind: str  # sigkill, sigstop, redis-restart, client-kill
    in_flight: set[str]
    detail: str = ""


@dataclass
class Figures:
    jobs: int = 0
    enqueue_raised: int = 0  # enqueues that raised (each retried until it landed)
    faults: list[Fault] = field(default_factory=list)
    lost: int = 0
    wrong_result: int = 0
    non_terminal: int = 0
    never_ran: int = 0
    ran_twice: int = 0  # jobs that ran more than once
    ran_max: int = 0
    rerun_not_in_flight: int = 0
    in_flight_at_faults: int = 0  # distinct jobs in flight at any fault
    # reruns by the faults their job was in flight at: "sigkill" (also at others), ...
    reruns_by_fault: Counter[str] = field(default_factory=Counter)
    stream_len: int = 0
    pending: int = 0
    scheduled: int = 0
    dead: int = 0
    waiters: int = 0
    waiters_ok: int = 0
    enqueue_seconds: float = 0.0
    total_seconds: float = 0.0
    worker_starts: int = 0

    def count(self, kind: str) -> int:
        return sum(f.kind == kind for f in self.faults)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.wrong_result == 0
            and self.non_terminal == 0
            and self.never_ran == 0
            and self.rerun_not_in_flight == 0
            and self.ran_twice <= self.in_flight_at_faults
            and self.stream_len == 0
            and self.pending == 0
            and self.scheduled == 0
            and self.dead == 0
            and self.waiters_ok == self.waiters
        )

    def held(self, kind: str) -> int:
        return sum(len(f.in_flight) for f in self.faults if f.kind == kind)

    def report(self) -> str:
        kinds = ["sigkill", "sigstop", "redis-restart", "client-kill"]
        per_kind = ", ".join(f"{k} {self.count(k)} (in flight {self.held(k)})" for k in kinds)
        lines = [
            f"jobs enqueued            {self.jobs:,} "
            f"({self.enqueue_raised} enqueue calls raised and were retried)",
            f"faults                   {per_kind}",
            f"worker processes         {self.worker_starts} started",
            f"lost                     {self.lost + self.wrong_result}  "
            f"(not succeeded: {self.lost}, wrong result: {self.wrong_result})",
            f"non-terminal             {self.non_terminal}",
            f"never ran                {self.never_ran}",
            f"ran more than once       {self.ran_twice}  (max runs of a job: {self.ran_max})",
            f"in flight at the faults  {self.in_flight_at_faults} distinct jobs",
            f"reruns not in flight     {self.rerun_not_in_flight}",
            "reruns in flight at      "
            + (", ".join(f"{k}: {n}" for k, n in sorted(self.reruns_by_fault.items())) or "-"),
            f"streams                  XLEN {self.stream_len}, XPENDING {self.pending}, "
            f"scheduled {self.scheduled}, dead letters {self.dead}",
            f"result() waiters         {self.waiters_ok}/{self.waiters} got their result",
            f"time                     {self.total_seconds:.1f} s "
            f"(enqueue and chaos {self.enqueue_seconds:.1f} s)",
            f"verdict                  {'OK' if self.ok else 'FAILED'}",
        ]
        return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class AofRedis:
    """redis-server on 127.0.0.1:<port>, append-only file with fsync on every write, killed
    and restarted on the same port and data directory."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not on PATH")
        self.exe = exe
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="aioq-soak-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        args = [
            self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"), "--maxclients", "10000",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start:\n{log}")
            time.sleep(0.01)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")  # not -LOADING while the AOF loads
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Fleet:
    """The worker processes, replaced when killed."""

    def __init__(self, cfg: Config, url: str, app_name: str) -> None:
        self.cfg, self.url = cfg, url
        self.env = {
            "AIOQ_SOAK_APP": app_name,
            "AIOQ_SOAK_VT": str(cfg.vt),
            "AIOQ_SOAK_MAX_DELIVERIES": "100",
            "PYTHONDONTWRITEBYTECODE": "",  # compiled once, not at every (re)start
        }
        self.live: list[WorkerProcess] = []
        self.dead: list[WorkerProcess] = []
        self.started = 0

    def spawn(self) -> WorkerProcess:
        w = WorkerProcess(TARGET, self.url, self.env, "--concurrency", str(self.cfg.concurrency))
        self.live.append(w)
        self.started += 1
        return w

    def retire(self, w: WorkerProcess) -> None:
        self.live.remove(w)
        self.dead.append(w)

    def close(self) -> None:
        for w in [*self.live, *self.dead]:
            w.close()


def job_mix(cfg: Config) -> list[tuple[str, list[int]]]:
    """(task, args) per job: mostly no-ops, some 10-500 ms sleeps, a few seconds-long sleeps
    (longer than the lease: renewed) and CPU-bound jobs in a thread."""
    rnd = random.Random(cfg.seed)
    mix: list[tuple[str, list[int]]] = []
    for i in range(cfg.jobs):
        r = rnd.random()
        if r < 0.85:
            mix.append(("noop", [i]))
        elif r < 0.975:
            mix.append(("nap", [i, rnd.randint(10, 500)]))
        elif r < 0.995:
            mix.append(("nap", [i, rnd.randint(1000, 5000)]))
        else:
            mix.append(("burn", [i, rnd.randint(20, 200)]))
    return mix


async def in_flight(admin: Redis, app: App, pid: int | None = None) -> set[str]:
    """Job ids of the pending entries (XPENDING) of the consumer of worker ``pid``, or of
    every consumer."""
    jobs: set[str] = set()
    for level in app.keys().levels:
        try:
            rows = await admin.xpending_range(level.stream, GROUP, "-", "+", 100_000)
        except ResponseError:
            continue  # no stream or group (yet); connection errors go to `retrying`
        ids = [
            r["message_id"]
            for r in rows
            if pid is None or f":{pid}:" in r["consumer"].decode(errors="replace")
        ]
        async with admin.pipeline(transaction=False) as pipe:
            for eid in ids:
                pipe.xrange(level.stream, eid, eid)
            entries = await pipe.execute()
        jobs |= {e[0][1][b"id"].decode() for e in entries if e}
    return jobs


async def retrying(what: Callable[[], Any], attempts: int = 100) -> Any:
    """The admin's commands outlast a Redis restart."""
    for attempt in range(attempts):
        try:
            return await what()
        except (RedisError, OSError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1)
    return None  # pragma: no cover


async def run_soak(cfg: Config, say: Callable[[str], None] = print) -> Figures:
    fig = Figures(jobs=cfg.jobs)
    server = AofRedis()
    server.start()
    name = f"soak{os.urandom(4).hex()}"
    app = App(name, redis_url=server.url, visibility_timeout=cfg.vt, max_deliveries=100)
    admin = Redis.from_url(server.url)
    fleet = Fleet(cfg, server.url, name)
    rnd = random.Random(cfg.seed + 1)
    t0 = time.monotonic()
    wall0 = time.time()

    def now() -> float:
        return time.monotonic() - t0

    try:
        for _ in range(cfg.workers):
            fleet.spawn()
        mix = job_mix(cfg)
        waiters: list[tuple[int, asyncio.Future[Any]]] = []

        async def produce() -> None:
            step = 0.1
            per_step = max(1, round(cfg.jobs * step / cfg.spread))
            i = 0
            while i < cfg.jobs:
                began = time.monotonic()
                batch = range(i, min(cfg.jobs, i + per_step))
                calls = [app.options(mix[k][0], job_id=f"j{k}").call(*mix[k][1]) for k in batch]
                while True:
                    try:
                        if len(calls) > 3:
                            jobs = await app.enqueue_many(calls[:-3])
                            for c, k in zip(calls[-3:], batch[-3:], strict=True):
                                jobs.append(
                                    await app.options(mix[k][0], job_id=f"j{k}").enqueue(*c.args)
                                )
                        else:
                            jobs = await app.enqueue_many(calls)
                        break
                    except RedisUnavailable:
                        fig.enqueue_raised += 1
                        await asyncio.sleep(0.1)
                for job, k in zip(jobs, batch, strict=True):
                    if k % 97 == 0:
                        waiters.append((k, asyncio.ensure_future(job.result())))
                i += len(batch)
                await asyncio.sleep(max(0.0, step - (time.monotonic() - began)))

        resumes: list[asyncio.Future[None]] = []

        async def resume(w: WorkerProcess, stopped: Fault) -> None:
            # A frozen worker's parked XREADGROUP is still a connected client: Redis may
            # deliver (and START_NEW start) entries to it after the freeze. They are in flight
            # at the stop as much as those it held, so its pending entries are sampled until
            # the others could have taken them over.
            until = time.monotonic() + cfg.vt + 2
            while time.monotonic() < until:
                with contextlib.suppress(RedisError, OSError):
                    stopped.in_flight |= await in_flight(admin, app, w.pid)
                await asyncio.sleep(0.2)
            w.signal(signal.SIGCONT)

        async def fault(kind: str) -> None:
            if kind == "sigkill":
                w = rnd.choice(fleet.live)
                w.signal(signal.SIGKILL)
                await w.exited(10)
                fleet.retire(w)
                fleet.spawn()
                held = await retrying(lambda: in_flight(admin, app, w.pid))
                detail = f"worker {w.pid}"
            elif kind == "sigstop":
                w = rnd.choice(fleet.live)
                w.signal(signal.SIGSTOP)
                held = await retrying(lambda: in_flight(admin, app, w.pid))
                stopped = Fault(now(), kind, held, f"worker {w.pid} for {cfg.vt + 2:g} s")
                fig.faults.append(stopped)
                resumes.append(asyncio.ensure_future(resume(w, stopped)))
                say(f"  {now():6.1f}s {kind:<13} {stopped.detail}; {len(held)} job(s) held")
                return
            elif kind == "redis-restart":
                server.kill()
                began = time.monotonic()
                await asyncio.to_thread(server.start)
                held = await retrying(lambda: in_flight(admin, app))
                detail = f"down {time.monotonic() - began:.2f} s"
            else:
                normal = await retrying(lambda: admin.client_kill_filter(_type="normal"))
                pubsub = await retrying(lambda: admin.client_kill_filter(_type="pubsub"))
                held = await retrying(lambda: in_flight(admin, app))
                detail = f"{normal} normal + {pubsub} pubsub connections"
            fig.faults.append(Fault(now(), kind, held, detail))
            say(f"  {now():6.1f}s {kind:<13} {detail}; {len(held)} job(s) in flight")

        async def chaos() -> None:
            kinds = (
                ["sigkill"] * cfg.kills
                + ["sigstop"] * cfg.stops
                + ["redis-restart"] * cfg.restarts
                + ["client-kill"] * cfg.client_kills
            )
            rnd.shuffle(kinds)
            gap = cfg.spread / (len(kinds) + 1)
            for n, kind in enumerate(kinds):
                due = gap * (n + 1) + rnd.uniform(-gap / 3, gap / 3)
                await asyncio.sleep(max(0.0, due - now()))
                await fault(kind)
            await asyncio.gather(*resumes)

        say(
            f"soak: {cfg.jobs:,} jobs, {cfg.workers} workers x {cfg.concurrency}, "
            f"visibility timeout {cfg.vt:g} s, over {cfg.spread:g} s; redis {server.url} "
            "(appendfsync always)"
        )
        await asyncio.gather(produce(), chaos())
        fig.enqueue_seconds = now()
        say(f"  {now():6.1f}s all enqueued, faults done; draining")

        ids = [f"j{k}" for k in range(cfg.jobs)]
        keys = app.keys()
        deadline = time.monotonic() + cfg.drain_timeout
        statuses: list[Any] = []
        while True:
            statuses = await retrying(lambda: _read_all(admin, keys, ids))
            left = sum(s[0] not in TERMINAL for s in statuses)
            if not left or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        # let the last completion batches and acknowledgements land
        await asyncio.sleep(0.5)
        fig.total_seconds = now()

        for k, (status, result) in enumerate(statuses):
            if status not in TERMINAL:
                fig.non_terminal += 1
            if status != b"succeeded":
                fig.lost += 1
            elif result != str(k).encode():
                fig.wrong_result += 1
        runs = await runs_per_job(admin, name)
        fig.never_ran = sum(runs[j] == 0 for j in ids)
        twice = {j for j in ids if runs[j] > 1}
        fig.ran_twice = len(twice)
        fig.ran_max = max(runs[j] for j in ids)
        flight = set().union(*(f.in_flight for f in fig.faults)) if fig.faults else set()
        fig.in_flight_at_faults = len(flight)
        fig.rerun_not_in_flight = len(twice - flight)
        for jid in twice & flight:
            at = sorted({f.kind for f in fig.faults if jid in f.in_flight})
            fig.reruns_by_fault[" + ".join(at)] += 1
        for level in keys.levels:
            fig.stream_len += await admin.xlen(level.stream)
            with contextlib.suppress(RedisError):
                fig.pending += int((await admin.xpending(level.stream, GROUP))["pending"])
        fig.scheduled = await admin.zcard(keys.scheduled)
        fig.dead = await admin.xlen(keys.dead)
        fig.waiters = len(waiters)
        for k, fut in waiters:
            with contextlib.suppress(Exception):
                if fut.done() and fut.result() == k:
                    fig.waiters_ok += 1
            fut.cancel()
        fig.worker_starts = fleet.started
        if not fig.ok:
            runs_of: dict[str, list[str]] = {}
            async for f, v in admin.hscan_iter(runs_key(name), count=5000):
                runs_of.setdefault(f.decode().partition("|")[0], []).append(v.decode())
            say(f"  wall clock at the start: {wall0:.3f}")
            _explain(say, fig, statuses, runs, twice - flight, fleet, runs_of)
        return fig
    finally:
        fleet.close()
        await app.aclose()
        with contextlib.suppress(Exception):
            await admin.delete(runs_key(name))
        await admin.aclose()
        server.stop()


async def _read_all(admin: Redis, keys: Any, ids: list[str]) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(ids), 5000):
        async with admin.pipeline(transaction=False) as pipe:
            for jid in ids[i : i + 5000]:
                pipe.hmget(keys.job(jid), "status", "result")
            out += await pipe.execute()
    return out


def _explain(
    say: Callable[[str], None],
    fig: Figures,
    statuses: list[Any],
    runs: Counter[str],
    strays: set[str],
    fleet: Fleet,
    runs_of: dict[str, list[str]],
) -> None:
    """What went wrong, for a failed run."""
    bad = [(f"j{k}", s) for k, s in enumerate(statuses) if s[0] != b"succeeded"][:10]
    say(f"  not succeeded (first 10): {bad}")
    say(f"  reruns not in flight (first 10): {sorted(strays)[:10]}")
    for jid in sorted(strays)[:10]:
        say(f"    {jid}: runs (pid attempt wall-time) {runs_of.get(jid)}")
    say("  faults: " + "; ".join(f"{f.at:.1f}s {f.kind} {f.detail}" for f in fig.faults))
    for w in [*fleet.live, *fleet.dead][-4:]:
        tail = "".join(w.output.splitlines(keepends=True)[-15:])
        say(f"  --- worker {w.pid} (last lines) ---\n{tail}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    d = Config()
    p.add_argument("--jobs", type=int, default=d.jobs)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--concurrency", type=int, default=d.concurrency)
    p.add_argument("--vt", type=float, default=d.vt)
    p.add_argument("--kills", type=int, default=d.kills)
    p.add_argument("--stops", type=int, default=d.stops)
    p.add_argument("--restarts", type=int, default=d.restarts)
    p.add_argument("--client-kills", type=int, default=d.client_kills)
    p.add_argument("--spread", type=float, default=d.spread)
    p.add_argument("--seed", type=int, default=d.seed)
    a = p.parse_args()
    cfg = Config(
        jobs=a.jobs, workers=a.workers, concurrency=a.concurrency, vt=a.vt, kills=a.kills,
        stops=a.stops, restarts=a.restarts, client_kills=a.client_kills, spread=a.spread,
        seed=a.seed,
    )  # fmt: skip
    fig = asyncio.run(run_soak(cfg))
    print(fig.report())
    sys.exit(0 if fig.ok else 1)


if __name__ == "__main__":
    main()
