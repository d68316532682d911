"""Scheduling and flow control across several worker PROCESSES, against a real redis-server:
cron ticks fired once by racing workers (one SIGKILLed), global rate limits measured from the
start times Redis stamps, limited jobs holding no slot, run-time limit changes, and cancelling
a job that runs in another process.

Workers run ``tests/apps/scheduling.py`` on the app named by the test's ``app`` fixture (passed
through the environment), so the test enqueues by task name and reads the same keys. Every
time compared below is Redis' clock (``TIME``, and the ``started_at`` / ``finished_at`` the
scripts write), never a process's own.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import anyio
import pytest

from aioq import App, Job, JobCancelled, JobStatus
from tests.apps.scheduling import side_key
from tests.helpers import Spawned, WorkerProcess, eventually, processes_parked

pytestmark = pytest.mark.anyio

TARGET = "tests.apps.scheduling:app"


# -- helpers ------------------------------------------------------------------------------


Spawn = Callable[..., WorkerProcess]


@pytest.fixture
def workers(redis_url: str) -> Iterator[Spawn]:
    """Start worker subprocesses: ``workers(app_name, *cli_args, **env)``; every one is killed
    at teardown and its output printed (shown when the test fails)."""
    spawned = Spawned()

    def spawn(app_name: str, *args: str, **env: str) -> WorkerProcess:
        return spawned.start(TARGET, redis_url, {"AIOQ_TEST_APP": app_name, **env}, *args)

    yield spawn
    spawned.close()


async def parked(app: App, *ws: WorkerProcess, timeout: float = 15) -> None:
    """Wait until every worker is parked in a blocking XREADGROUP: started, and idle."""
    await processes_parked(app, *ws, timeout=timeout)


async def redis_ms(app: App) -> int:
    seconds, micros = await app.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def finished(app: App, jobs: list[Job[int]], timeout: float, what: str) -> None:
    """Wait until every job has finished (polling their records)."""
    keys = [app.keys().job(j.id) for j in jobs]

    async def done() -> bool:
        async with app.redis.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hget(k, "status")
            return all(s in (b"succeeded", b"failed") for s in await pipe.execute())

    await eventually(done, timeout, what, interval=0.05)


async def start_times(jobs: list[Job[int]]) -> list[int]:
    """Each job's ``started_at`` (Redis ms), asserting it succeeded on its first attempt: a
    rate-limited job that waited spent no attempt."""
    out = []
    for j in jobs:
        info = await j.info()
        assert info.status is JobStatus.SUCCEEDED, info
        assert info.attempts == 1, info
        assert info.started_at is not None
        out.append(round(info.started_at.timestamp() * 1000))
    return sorted(out)


def max_in_window(starts: list[int], window_ms: int) -> int:
    """The most starts any half-open window (t - window_ms, t] holds (the limiter's window)."""
    best, lo = 0, 0
    for hi, t in enumerate(starts):
        while starts[lo] <= t - window_ms:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# -- a. cron --------------------------------------------------------------------------------


@pytest.mark.slow
async def test_cron_fires_each_tick_once_across_workers_one_killed(
    app: App, workers: Spawn
) -> None:
    """Three workers race to fire a 250 ms cron for ~3 s, one SIGKILLed midway: every tick in
    the measured span ran, exactly once."""
    every_ms = 250
    env = {"AIOQ_TEST_CRON_EVERY": str(every_ms / 1000), "AIOQ_TEST_VT": "1"}
    ws = [workers(app.name, "--concurrency", "4", **env) for _ in range(3)]
    await parked(app, *ws)
    await anyio.sleep(0.3)  # every cron loop has loaded its state and fired at least once
    t0 = await redis_ms(app)

    # Kill one worker mid-interval, well away from a tick: a job it held in flight would
    # run again (at-least-once, the subject of test_faults.py), which is not this property.
    await anyio.sleep(1.4)
    now = await redis_ms(app)
    await anyio.sleep(((every_ms // 2) - now % every_ms) % every_ms / 1000)
    os.killpg(ws[0].pid, signal.SIGKILL)
    assert await ws[0].exited(5) == -signal.SIGKILL

    await anyio.sleep(1.6)
    t1 = await redis_ms(app)
    await anyio.sleep(0.3)  # the tick at or before t1 has run
    for w in ws[1:]:
        w.proc.send_signal(signal.SIGTERM)
    for w in ws[1:]:
        assert await w.exited(15) == 0

    raw = await app.redis.lrange(side_key(app.name, "ticks"), 0, -1)
    runs = [r.decode().rsplit(" ", 1) for r in raw]  # "<job id> <pid>"; the id has a space
    job_ids = [job_id for job_id, _ in runs]
    ticks = sorted(int(job_id.rsplit(":", 1)[1]) for job_id in job_ids)
    assert all(job_id.startswith("cron:tick@every 0.25s:") for job_id in job_ids), job_ids
    assert len(ticks) == len(set(ticks)), f"a tick ran twice: {ticks}"
    assert all(t % every_ms == 0 for t in ticks), ticks
    assert ticks == list(range(ticks[0], ticks[-1] + 1, every_ms)), f"a tick was missed: {ticks}"
    expected = list(range(t0 - t0 % every_ms + every_ms, t1 + 1, every_ms))
    assert set(expected) <= set(ticks), f"ticks of {t0}..{t1} missing: {ticks}"
    assert len(expected) >= 11, expected  # the span was ~3 s of 250 ms ticks
    # after the kill, ticks kept firing and running, on the survivors
    survivors = {str(w.pid) for w in ws[1:]}
    late = [pid for job_id, pid in runs if int(job_id.rsplit(":", 1)[1]) > t1 - 1000]
    assert late, runs
    assert set(late) <= survivors, runs
    for job_id in job_ids:
        info = await app.job(job_id).info()
        assert info.status is JobStatus.SUCCEEDED, info
        assert info.attempts == 1, info


# -- b. rate limit across workers ---------------------------------------------------------


@pytest.mark.slow
async def test_rate_limit_holds_across_two_workers(app: App, workers: Spawn) -> None:
    """Two workers start 25 jobs of a "5/s" task: no 1 s window holds more than 5 starts, the
    limit is reached, every job succeeded on its first attempt, and each came back once."""
    # Each job holds one of its worker's 2 slots for 500 ms, so one worker alone starts at
    # most 4 per second: reaching 5 in a window takes both, and the limit must hold across them.
    ws = [workers(app.name, "--concurrency", "2", AIOQ_TEST_RATE="5/s") for _ in range(2)]
    await parked(app, *ws)
    jobs = await app.enqueue_many([app.options("limited").call(i, 500) for i in range(25)])
    await finished(app, jobs, 15, "25 limited jobs finished")

    starts = await start_times(jobs)
    assert max_in_window(starts, 1000) == 5, starts
    # 25 starts at 5 per window need 4 s at least, and the limiter does not waste much more
    assert 4000 <= starts[-1] - starts[0] <= 6000, starts
    ran_on = {(await j.info()).worker for j in jobs}
    assert len(ran_on) == 2, f"one worker ran every job: {ran_on}"
    # 20 jobs were turned away; each comes back from the scheduled set about once (every
    # stream entry beyond the 25 enqueued is a come-back), not once per period while it waits
    stream = await app.redis.xinfo_stream(app.keys().stream)
    if "entries-added" in stream:  # Redis >= 7.0
        comebacks = stream["entries-added"] - len(jobs)
        assert 20 <= comebacks <= 30, f"{comebacks} come-backs for 20 jobs turned away"


# -- c. limited jobs hold no slot ---------------------------------------------------------


@pytest.mark.slow
async def test_limited_jobs_do_not_hold_slots_or_slow_others(app: App, workers: Spawn) -> None:
    """With 4 slots in all, 10 jobs of a "2/s" task queued ahead of 100 unlimited ones do not
    delay them: those finish within 2 s while the limited ones keep to 2 per second."""
    ws = [workers(app.name, "--concurrency", "2", AIOQ_TEST_RATE="2/s") for _ in range(2)]
    await parked(app, *ws)
    t0 = await redis_ms(app)
    limited = await app.enqueue_many([app.options("limited").call(i) for i in range(10)])
    unlimited = await app.enqueue_many([app.options("quick").call(i, 10) for i in range(100)])
    await finished(app, unlimited, 10, "100 unlimited jobs finished")
    await finished(app, limited, 15, "10 limited jobs finished")

    done_at = []
    for j in unlimited:
        info = await j.info()
        assert info.status is JobStatus.SUCCEEDED, info
        assert info.finished_at is not None
        done_at.append(round(info.finished_at.timestamp() * 1000))
    starts = await start_times(limited)
    assert max(done_at) - t0 < 2000, f"unlimited jobs took {max(done_at) - t0} ms"
    assert max_in_window(starts, 1000) == 2, starts
    assert starts[-1] - starts[0] >= 4000, starts  # 10 starts at 2 per window
    assert max(done_at) < starts[4], "the unlimited jobs waited for the limited ones"


# -- d. run-time change -------------------------------------------------------------------


@pytest.mark.slow
async def test_rate_limit_changed_at_run_time(app: App, workers: Spawn) -> None:
    """``set_rate_limit`` to "2/s" slows the next starts of a task declared "10/s" on running
    workers; clearing it restores the declared limit, all without a restart."""
    ws = [workers(app.name, "--concurrency", "10", AIOQ_TEST_RATE="10/s") for _ in range(2)]
    await parked(app, *ws)
    assert await app.rate_limits() == {"limited": "10/s"}

    await app.set_rate_limit("limited", "2/s")
    assert await app.rate_limits() == {"limited": "2/s"}
    slow = await app.enqueue_many([app.options("limited").call(i) for i in range(6)])
    await finished(app, slow, 10, "6 jobs under the 2/s override finished")
    starts = await start_times(slow)
    assert max_in_window(starts, 1000) == 2, starts
    assert starts[-1] - starts[0] >= 2000, starts

    await app.set_rate_limit("limited", None)
    assert await app.rate_limits() == {"limited": "10/s"}
    await anyio.sleep(1.05)  # the override's starts have left the window
    fast = await app.enqueue_many([app.options("limited").call(i) for i in range(15)])
    await finished(app, fast, 10, "15 jobs under the declared 10/s finished")
    starts = await start_times(fast)
    assert max_in_window(starts, 1000) == 10, starts
    assert starts[9] - starts[0] < 500, starts  # far more than 2 per second again
    assert starts[-1] - starts[0] >= 1000, starts  # but no more than 10
    assert all(w.alive for w in ws), "a worker restarted"


# -- e. cancel across processes -----------------------------------------------------------


@pytest.mark.slow
async def test_cancel_running_job_in_another_process(app: App, workers: Spawn) -> None:
    """``job.cancel()`` on a job running in a worker subprocess cancels its coroutine within
    1 s; the job ends cancelled and ``result()`` raises ``JobCancelled``."""
    w = workers(app.name, "--concurrency", "4")
    await parked(app, w)
    job = await app.enqueue("hang")
    started, cancelled = side_key(app.name, "hang:started"), side_key(app.name, "hang:cancelled")

    async def running() -> bool:
        return bool(await app.redis.exists(started)) and (await job.status() is JobStatus.RUNNING)

    await eventually(running, 10, "the job running in the worker")
    t = time.monotonic()
    assert await job.cancel() is True

    async def recorded() -> bool:
        return bool(await app.redis.exists(cancelled))

    await eventually(recorded, 1.0, "the coroutine saw CancelledError", interval=0.005)
    elapsed = time.monotonic() - t
    assert elapsed < 1.0
    assert int(await app.redis.get(cancelled) or 0) == w.pid
    with pytest.raises(JobCancelled):
        await job.result(timeout=5)
    info = await job.info()
    assert info.status is JobStatus.CANCELLED, info
    assert info.attempts == 1, info
    assert await job.cancel() is False  # finished: nothing changes
    assert await (await app.enqueue("quick", 7, 0)).result(timeout=5) == 7  # still serving
    assert w.alive
