"""Producers without an event loop: ``enqueue_sync`` and ``SyncJob`` from plain threads, with
a worker running in a thread of its own (its own event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from aioq import (
    App,
    JobCancelled,
    JobNotFound,
    JobStatus,
    RedisUnavailable,
    SyncJob,
    TaskFailed,
    Worker,
)
from tests.conftest import unique_name


@contextlib.contextmanager
def worker_thread(app: App, **options: Any) -> Iterator[Worker]:
    """A worker running in its own thread and event loop until the block ends."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        worker = Worker(app, **options)
        box["worker"], box["loop"] = worker, asyncio.get_running_loop()
        async with worker:
            ready.set()
            await worker._stop.wait()
        await app.aclose()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # shown by the test instead of lost in the thread
            box["error"] = exc
            ready.set()

    t = threading.Thread(target=run, name="aioq-test-worker")
    t.start()
    assert ready.wait(10), "the worker thread did not start"
    if "error" in box:
        raise box["error"]
    try:
        yield box["worker"]
    finally:
        box["loop"].call_soon_threadsafe(box["worker"].stop)
        t.join(20)
        assert not t.is_alive(), "the worker thread did not stop"
        if "error" in box:
            raise box["error"]


GATES: dict[str, threading.Event] = {}


def make_app(url: str, **options: Any) -> App:
    app = App(unique_name(), redis_url=url, **options)

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task
    async def boom(message: str) -> None:
        raise ValueError(message)

    @app.task
    async def wait(gate: str) -> str:
        await asyncio.to_thread(GATES[gate].wait, 10)  # set by the test's thread
        return gate

    return app


def hmget_calls(r: redis.Redis) -> int:
    stats: dict[str, Any] = r.info("commandstats")
    return int(stats.get("cmdstat_hmget", {}).get("calls", 0))


def test_eight_threads_enqueue_200_jobs_and_read_their_results(redis_url: str) -> None:
    """A plain thread pool of 8 threads enqueues 200 jobs (one round trip each); a worker
    runs them; each thread reads its results, status and info through ``SyncJob``."""
    app = make_app(redis_url)
    add = app.tasks["add"]

    def produce(i: int) -> list[tuple[SyncJob[int], int]]:
        return [(add.enqueue_sync(i, j), i + j) for j in range(25)]

    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(produce, range(8)))
    jobs = [pair for batch in batches for pair in batch]
    assert len({job.id for job, _ in jobs}) == 200
    assert app._sync().redis.xlen(app.keys().stream) == 200  # all queued before any ran

    with worker_thread(app, concurrency=20), ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: p[0].result(timeout=20), jobs))
    assert results == [want for _, want in jobs]
    job = jobs[0][0]
    assert job.status() is JobStatus.SUCCEEDED
    assert job.done()
    info = job.info()
    assert (info.task, info.args, info.result, info.attempts) == ("add", [0, 0], 0, 1)
    app.close()


def test_result_waits_by_push_not_by_polling(redis_url: str) -> None:
    """A result() that waits 1 s reads the record a couple of times (before the wait, after
    the push), not once per poll interval; the push ends the wait at once."""
    app = make_app(redis_url)
    gate = app.name
    GATES[gate] = threading.Event()
    r = app._sync().redis
    with worker_thread(app, concurrency=2):
        job = app.tasks["wait"].enqueue_sync(gate)
        threading.Timer(1.0, GATES[gate].set).start()
        before = hmget_calls(r)
        t0 = time.monotonic()
        assert job.result(timeout=10) == gate
        elapsed = time.monotonic() - t0
    assert 0.9 < elapsed < 3.0
    assert hmget_calls(r) - before <= 3
    app.close()


def test_failures_cancel_and_timeout(redis_url: str) -> None:
    """result() raises TaskFailed with the remote details, TimeoutError when not done in
    time, JobCancelled after cancel(); cancel() of a finished job is False."""
    app = make_app(redis_url)
    queued = app.tasks["add"].enqueue_sync(1, 2)  # no worker yet: stays queued
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not finish within 0.3s \(status queued\)"):
        queued.result(timeout=0.3)
    assert 0.25 < time.monotonic() - t0 < 2
    assert queued.cancel() is True
    assert queued.status() is JobStatus.CANCELLED
    with pytest.raises(JobCancelled):
        queued.result(timeout=5)
    assert queued.cancel() is False

    failing = app.tasks["boom"].enqueue_sync("no such user")
    with worker_thread(app, concurrency=2):
        with pytest.raises(TaskFailed, match="no such user") as caught:
            failing.result(timeout=10)
        assert caught.value.exc_type == "ValueError"
    assert failing.cancel() is False
    app.close()


def test_by_name_handles_and_idempotent_job_ids(redis_url: str) -> None:
    """app.enqueue_sync by name; app.job_sync(id) finds the job's queue; an existing job_id
    enqueues nothing; an unknown id is JobNotFound."""
    app = make_app(redis_url)
    first = app.tasks["add"].options(job_id="order-42").enqueue_sync(1, 1)
    again = app.tasks["add"].options(job_id="order-42").enqueue_sync(5, 5)
    assert first == again
    named = app.enqueue_sync("add", 2, 2)
    with pytest.raises(ValueError, match="no task named 'nope'"):
        app.enqueue_sync("nope")
    with worker_thread(app, concurrency=2):
        assert app.job_sync("order-42").result(timeout=10) == 2
        assert app.job_sync(named.id).result(timeout=10) == 4
    assert app.job_sync("order-42").queue is None
    handle = app.job_sync("order-42")
    assert handle.info().kwargs == {}
    assert handle.queue == "default"
    with pytest.raises(JobNotFound):
        app.job_sync("missing").status()
    app.close()


def test_signed_and_typed_like_enqueue(redis_url: str) -> None:
    """The sync path encodes through Call.prepare: signed, and checked against the signature."""
    app = make_app(redis_url, signing_key=b"secret")
    job = app.tasks["add"].enqueue_sync(3, 4)
    assert app._sync().redis.hget(app.keys().job(job.id), "sig") is not None
    with pytest.raises(TypeError, match="called with bad arguments"):
        app.tasks["add"].enqueue_sync(1)  # type: ignore[call-arg]
    with worker_thread(app, concurrency=2):
        assert job.result(timeout=10) == 7
    app.close()


def test_refused_inside_a_running_event_loop(redis_url: str) -> None:
    """A blocking call from a thread that runs an event loop would stall it: RuntimeError."""
    app = make_app(redis_url)
    job = app.job_sync("x", "default")

    async def handler() -> None:
        with pytest.raises(RuntimeError, match=r"enqueue_sync\(\) blocks, and this thread runs"):
            app.tasks["add"].enqueue_sync(1, 2)
        with pytest.raises(RuntimeError, match=r"SyncJob.result\(\) blocks"):
            job.result(timeout=1)
        # from a thread it is fine (asyncio.to_thread)
        done = await asyncio.to_thread(app.tasks["add"].enqueue_sync, 1, 2)
        assert done.queue == "default"

    asyncio.run(handler())
    app.close()


def test_unreachable_redis_names_the_url(redis_url: str) -> None:
    """A Redis that is not there: RedisUnavailable naming the URL (password hidden)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = make_app(f"redis://user:hunter2@127.0.0.1:{port}/0")
    with pytest.raises(
        RedisUnavailable, match=rf"cannot reach Redis at redis://user:\*\*\*@127.0.0.1:{port}/0"
    ):
        app.tasks["add"].enqueue_sync(1, 2)
    app.close()
