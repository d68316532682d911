"""Worker behaviour in-process: results, failures, retries, timeouts, context, threads."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from aioq import App, JobCancelled, JobStatus, Retry, TaskFailed, Worker, current_job
from tests.helpers import parked

pytestmark = pytest.mark.anyio


async def test_result_is_returned_and_entry_deleted(app: App) -> None:
    """A finished job's value comes back through result(); its stream entry is gone."""

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    async with Worker(app, concurrency=4):
        job = await add.enqueue(2, 3)
        assert await job.result(timeout=5) == 5
        info = await job.info()
    assert info.status is JobStatus.SUCCEEDED
    assert info.attempts == 1
    assert info.started_at is not None
    assert info.finished_at is not None
    assert info.enqueued_at is not None
    assert info.enqueued_at <= info.started_at
    assert await app.redis.xlen(app.keys().stream) == 0


async def test_failure_raises_task_failed_with_remote_details(app: App) -> None:
    """The remote exception's type, message and traceback reach the caller."""

    @app.task
    async def explode(what: str) -> None:
        raise ValueError(f"bad {what}")

    async with Worker(app):
        job = await explode.enqueue("input")
        with pytest.raises(TaskFailed) as caught:
            await job.result(timeout=5)
    err = caught.value
    assert str(err) == "bad input"
    assert err.exc_type == "ValueError"
    assert err.job_id == job.id
    assert "raise ValueError" in err.traceback
    assert (await job.info()).error == "bad input"


async def test_result_timeout_raises_builtin_timeout_error(app: App) -> None:
    """Waiting longer than timeout= for an unfinished job raises TimeoutError."""

    @app.task
    async def never() -> None: ...

    job = await never.enqueue()  # no worker runs
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.2s"):
        await job.result(timeout=0.2)
    assert 0.15 < time.monotonic() - started < 2


async def test_many_waiters_share_one_subscription(app: App) -> None:
    """Hundreds of concurrent result() calls use one pub/sub connection, not one each."""

    @app.task
    async def slow(i: int) -> int:
        await asyncio.sleep(0.3)
        return i

    jobs = await app.enqueue_many([slow.call(i) for i in range(200)])
    waiting = [asyncio.ensure_future(j.result(timeout=10)) for j in jobs]
    await asyncio.sleep(0.2)
    clients = await app.redis.client_list(_type="pubsub")
    assert len(clients) == 1
    async with Worker(app, concurrency=200):
        assert await asyncio.gather(*waiting) == list(range(200))


async def test_result_of_job_finished_before_waiting(app: App) -> None:
    """A job that finished before result() is called is read from its stored state."""

    @app.task
    async def one() -> int:
        return 1

    async with Worker(app):
        job = await one.enqueue()
        for _ in range(200):
            if await job.status() is JobStatus.SUCCEEDED:
                break
            await asyncio.sleep(0.01)
    assert await job.result(timeout=1) == 1


async def test_retries_with_backoff_then_success(app: App) -> None:
    """A failing task is retried up to `retries` times, each attempt numbered."""
    attempts: list[int] = []

    @app.task(retries=3, backoff=0.01)
    async def flaky() -> str:
        attempts.append(current_job().attempt)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "done"

    async with Worker(app):
        job = await flaky.enqueue()
        assert await job.result(timeout=5) == "done"
    assert attempts == [1, 2, 3]
    info = await job.info()
    assert info.attempts == 3
    # the job succeeded: no error of its own; the failed attempts are its history
    assert (info.error, info.exc_type, info.traceback) == (None, None, None)
    assert [(h["attempt"], h["exc_type"], h["error"]) for h in info.history] == [
        (1, "ConnectionError", "try again"), (2, "ConnectionError", "try again")
    ]  # fmt: skip
    assert all(h["at"] is not None for h in info.history)
    assert info.history[0]["traceback"] is None  # only the newest keeps its traceback
    assert "raise ConnectionError" in info.history[1]["traceback"]


async def test_history_keeps_the_last_ten_failures(app: App) -> None:
    """A job retried many times keeps only its last ten failures, oldest first; one that
    fails for good has its final error as the job's and the attempts before as history."""

    @app.task(retries=11, backoff=0)
    async def hopeless() -> None:
        raise RuntimeError(f"attempt {current_job().attempt}")

    async with Worker(app):
        job = await hopeless.enqueue()
        with pytest.raises(TaskFailed, match="attempt 12"):
            await job.result(timeout=10)
    info = await job.info()
    assert (info.error, info.exc_type) == ("attempt 12", "RuntimeError")
    assert [h["attempt"] for h in info.history] == list(range(2, 12))
    assert [h["error"] for h in info.history] == [f"attempt {n}" for n in range(2, 12)]


async def test_retries_exhausted_fail_with_last_error(app: App) -> None:
    """After retries+1 attempts the job fails with the last attempt's error."""
    delays: list[int] = []

    def backoff(attempt: int) -> float:
        delays.append(attempt)
        return 0.0

    @app.task(retries=2, backoff=backoff)
    async def always() -> None:
        raise RuntimeError(f"attempt {current_job().attempt}")

    async with Worker(app):
        job = await always.enqueue()
        with pytest.raises(TaskFailed, match="attempt 3"):
            await job.result(timeout=5)
    assert delays == [1, 2]
    assert (await job.info()).attempts == 3


async def test_backoff_is_exponential_with_jitter(app: App) -> None:
    """Delays double per attempt, jittered into [50%, 100%] of the exponential value."""

    @app.task(backoff=2.0)
    async def t() -> None: ...

    for attempt, full in [(1, 2.0), (2, 4.0), (3, 8.0)]:
        for _ in range(50):
            assert full / 2 <= t.backoff_delay(attempt) <= full


async def test_retry_exception_reschedules_after_delay(app: App) -> None:
    """raise Retry(delay=) runs the job again no sooner than the delay."""
    starts: list[float] = []

    @app.task
    async def poll() -> int:
        starts.append(time.monotonic())
        if len(starts) == 1:
            raise Retry(delay=0.3)
        return current_job().attempt

    async with Worker(app):
        job = await poll.enqueue()
        assert await job.result(timeout=5) == 2
    assert starts[1] - starts[0] >= 0.29


async def test_attempt_timeout_fails_the_attempt(app: App) -> None:
    """An attempt running past `timeout` fails with TimeoutError and may retry."""
    attempts: list[int] = []

    @app.task(timeout=0.1, retries=1, backoff=0)
    async def hang() -> None:
        attempts.append(current_job().attempt)
        await asyncio.sleep(10)

    async with Worker(app):
        job = await hang.enqueue()
        with pytest.raises(TaskFailed, match=r"timed out after 0.1s \(attempt 2\)") as caught:
            await job.result(timeout=5)
    assert caught.value.exc_type == "TimeoutError"
    assert attempts == [1, 2]


async def test_timeout_option_overrides_task_default(app: App) -> None:
    @app.task(timeout=30)
    async def sleepy() -> None:
        await asyncio.sleep(5)

    async with Worker(app):
        job = await sleepy.options(timeout=0.05).enqueue()
        with pytest.raises(TaskFailed, match=r"timed out after 0\.05s"):
            await job.result(timeout=5)


async def test_sync_task_runs_in_a_thread(app: App) -> None:
    """A plain `def` task runs off the event loop thread, with current_job() available."""

    @app.task
    def where(x: int) -> list[Any]:
        return [threading.current_thread() is threading.main_thread(), current_job().id, x]

    async with Worker(app):
        job = await where.enqueue(7)
        assert await job.result(timeout=5) == [False, job.id, 7]


async def test_current_job_and_progress(app: App) -> None:
    """current_job() names the job; set_progress is visible in info()."""
    seen: list[tuple[str, int, str]] = []

    @app.task(name="reports.build")
    async def build() -> None:
        ctx = current_job()
        seen.append((ctx.id, ctx.attempt, ctx.task))
        await ctx.set_progress({"done": 3, "of": 4})

    async with Worker(app):
        job = await build.options(job_id="r1").enqueue()
        await job.result(timeout=5)
    assert seen == [("r1", 1, "reports.build")]
    assert (await job.info()).progress == {"done": 3, "of": 4}
    with pytest.raises(RuntimeError, match="only available inside a task"):
        current_job()


async def test_concurrency_is_respected(app: App) -> None:
    """Never more than `concurrency` jobs run at once."""
    running = 0
    peak = 0

    @app.task
    async def busy() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    jobs = await app.enqueue_many([busy.call() for _ in range(40)])
    async with Worker(app, concurrency=3):
        for j in jobs:
            await j.result(timeout=10)
    assert peak == 3


async def test_result_ttl_expires_finished_records(redis_url: str) -> None:
    """Finished job records carry the app's result_ttl."""
    app = App("ttl" + str(time.monotonic_ns()), redis_url=redis_url, result_ttl=60)

    @app.task
    async def one() -> int:
        return 1

    async with Worker(app):
        job = await one.enqueue()
        await job.result(timeout=5)
    assert 0 < await app.redis.ttl(app.keys().job(job.id)) <= 60
    await app.aclose()


async def test_burst_worker_drains_and_returns(app: App) -> None:
    """A burst worker runs everything queued, including retries due now, then stops."""
    done: list[int] = []

    @app.task(retries=1, backoff=0)
    async def work(i: int) -> None:
        if i == 0 and current_job().attempt == 1:
            raise ValueError("first attempt fails")
        done.append(i)

    await app.enqueue_many([work.call(i) for i in range(50)])
    await asyncio.wait_for(Worker(app, burst=True).run(), 10)
    assert sorted(done) == list(range(50))


async def test_delayed_job_is_scheduled_then_runs(app: App) -> None:
    """options(delay=) keeps the job scheduled until due, then it runs."""
    ran_at: list[float] = []

    @app.task
    async def later() -> None:
        ran_at.append(time.monotonic())

    async with Worker(app):
        t0 = time.monotonic()
        job = await later.options(delay=0.3).enqueue()
        assert await job.status() is JobStatus.SCHEDULED
        await job.result(timeout=5)
    assert 0.28 <= ran_at[0] - t0 < 1.0


async def test_worker_stop_returns_from_run(app: App) -> None:
    """worker.run() returns after stop(), inside an existing loop."""
    worker = Worker(app)
    runner = asyncio.ensure_future(worker.run())
    await asyncio.sleep(0.1)
    worker.stop()
    await asyncio.wait_for(runner, 5)
    assert runner.done()
    assert runner.exception() is None


async def test_non_json_result_fails_the_job(app: App) -> None:
    """A return value that is not JSON fails the job with a message naming the task."""

    @app.task
    async def weird() -> object:
        return object()

    async with Worker(app):
        job = await weird.enqueue()
        with pytest.raises(TaskFailed, match="return value of task 'weird'"):
            await job.result(timeout=5)


async def test_cancel_queued_job_never_starts(app: App) -> None:
    """Cancelling a queued job makes it cancelled; no worker ever starts it."""
    ran: list[str] = []

    @app.task
    async def work() -> None:
        ran.append(current_job().id)

    job = await work.enqueue()
    assert await job.cancel() is True
    assert await job.status() is JobStatus.CANCELLED
    await asyncio.wait_for(Worker(app, burst=True).run(), 10)
    assert ran == []
    with pytest.raises(JobCancelled):
        await job.result(timeout=1)
    assert await app.redis.xlen(app.keys().stream) == 0


async def test_cancel_scheduled_job_never_starts(app: App) -> None:
    @app.task
    async def work() -> None:
        raise AssertionError("must not run")

    job = await work.options(delay=0.2).enqueue()
    assert await job.cancel() is True
    assert await app.redis.zcard(app.keys().scheduled) == 0
    async with Worker(app):
        await asyncio.sleep(0.4)
    assert await job.status() is JobStatus.CANCELLED


async def test_cancel_running_job_cancels_its_coroutine(app: App) -> None:
    """A running job's coroutine is cancelled promptly through the worker's signal."""
    started = asyncio.Event()
    cancelled_at: list[float] = []

    @app.task
    async def long() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled_at.append(time.monotonic())
            raise

    async with Worker(app):
        job = await long.enqueue()
        await asyncio.wait_for(started.wait(), 5)
        t0 = time.monotonic()
        assert await job.cancel() is True
        with pytest.raises(JobCancelled):
            await job.result(timeout=5)
    assert cancelled_at
    assert cancelled_at[0] - t0 < 1.0
    assert await job.status() is JobStatus.CANCELLED


async def test_cancel_finished_job_returns_false(app: App) -> None:
    @app.task
    async def one() -> int:
        return 1

    async with Worker(app):
        job = await one.enqueue()
        await job.result(timeout=5)
    assert await job.cancel() is False
    assert await job.status() is JobStatus.SUCCEEDED
    assert await job.result() == 1


async def test_fewer_slots_than_queues_serves_every_queue(app: App) -> None:
    """With concurrency 1 and two queues, neither queue starves while the other is empty."""

    @app.task(queue="a")
    async def in_a(i: int) -> int:
        return i

    @app.task(queue="b")
    async def in_b(i: int) -> int:
        return i

    async with Worker(app, concurrency=1, queues=["a", "b"]) as worker:
        await parked(worker, queues=1)  # one parked with the slot, the other waiting for it
        t0 = time.monotonic()
        jobs = [await in_b.enqueue(i) for i in range(5)]
        assert [await j.result(timeout=5) for j in jobs] == list(range(5))
        jobs = [await in_a.enqueue(i) for i in range(5)]
        assert [await j.result(timeout=5) for j in jobs] == list(range(5))
    assert time.monotonic() - t0 < 2.0
