"""The soak (``benchmarks/soak.py``) scaled down to run in CI: thousands of jobs of mixed
durations through three worker processes while workers are SIGKILLed and SIGSTOPped, Redis
(append-only file, fsync always) is restarted and every client connection is killed.

And a lone worker frozen past its lease: with no other worker to take its jobs over, it must
not take over (and start again) the jobs it is still running itself.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from aioq import App, JobStatus
from aioq.embedded import EmbeddedRedis
from benchmarks.soak import Config, run_soak
from tests.apps.soak import runs_per_job
from tests.conftest import unique_name
from tests.helpers import WorkerProcess, eventually

pytestmark = pytest.mark.anyio


@pytest.mark.slow
async def test_soak_under_chaos_loses_nothing_and_reruns_only_jobs_in_flight() -> None:
    """3,000 jobs, 6 worker SIGKILLs, a SIGSTOP past the lease, a Redis restart and two
    kills of every client connection: every job succeeds with its result, each ran at least
    once, only jobs in flight at a fault ran again, and the streams end empty."""
    cfg = Config(
        jobs=3000, workers=3, concurrency=30, vt=2.0, kills=6, stops=1, restarts=1,
        client_kills=2, spread=25.0, drain_timeout=60.0, seed=8,
    )  # fmt: skip
    fig = await run_soak(cfg, say=print)
    print(fig.report())
    assert fig.count("sigkill") == 6
    assert fig.count("sigstop") == 1
    assert fig.count("redis-restart") == 1
    assert fig.count("client-kill") == 2
    assert (fig.lost, fig.wrong_result, fig.non_terminal, fig.never_ran) == (0, 0, 0, 0)
    assert fig.rerun_not_in_flight == 0
    assert fig.ran_twice <= fig.in_flight_at_faults
    assert (fig.stream_len, fig.pending, fig.scheduled, fig.dead) == (0, 0, 0, 0)
    assert fig.waiters > 0
    assert fig.waiters_ok == fig.waiters
    assert fig.ok


# -- a lone worker frozen past its lease ---------------------------------------------------------


@pytest.fixture
def tcp_redis() -> Iterator[EmbeddedRedis]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with EmbeddedRedis(port=port) as server:
        yield server


@pytest.fixture
async def lone(tcp_redis: EmbeddedRedis) -> AsyncIterator[tuple[App, WorkerProcess]]:
    name = unique_name("lone")
    app = App(name, redis_url=tcp_redis.url)
    env = {"AIOQ_SOAK_APP": name, "AIOQ_SOAK_VT": "1.5"}
    w = WorkerProcess("tests.apps.soak:app", tcp_redis.url, env, "--concurrency", "10")
    yield app, w
    w.close()
    print(f"--- worker {w.pid} (exit {w.proc.returncode}) ---\n{w.output}")
    await app.aclose()


async def _all_running(app: App, ids: list[str], w: WorkerProcess) -> bool:
    for jid in ids:
        info = await app.job(jid).info()
        if info.status is not JobStatus.RUNNING or f":{w.pid}:" not in (info.worker or ""):
            return False
    return True


@pytest.mark.slow
async def test_lone_worker_frozen_past_its_lease_runs_its_jobs_once(
    lone: tuple[App, WorkerProcess],
) -> None:
    app, w = lone
    jobs = await app.enqueue_many([app.options("nap").call(i, 4000) for i in range(5)])
    ids = [j.id for j in jobs]
    await eventually(lambda: _all_running(app, ids, w), 15, "every job running")
    await asyncio.sleep(0.3)
    w.signal(signal.SIGSTOP)
    await asyncio.sleep(3 * 1.5)  # three leases
    w.signal(signal.SIGCONT)
    results: list[Any] = await asyncio.wait_for(
        asyncio.gather(*(j.result() for j in jobs)), timeout=15
    )
    assert results == list(range(5))
    runs = await runs_per_job(app.redis, app.name)
    assert [runs[j] for j in ids] == [1] * 5
