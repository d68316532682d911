"""Priorities: one stream per level, higher first, lower levels never starved."""

from __future__ import annotations

import asyncio
import time

import pytest

from aioq import App, Job, JobCancelled, JobStatus, Worker
from aioq.keys import GROUP
from aioq.ops import purge_queue
from aioq.views import queue_stats
from tests.helpers import parked

pytestmark = pytest.mark.anyio


def recorder(app: App, **options: object) -> tuple[object, list[int]]:
    """A task that records the priority argument it was started with, in start order."""
    order: list[int] = []

    @app.task(**options)  # type: ignore[call-overload]
    async def job(p: int) -> int:
        order.append(p)
        return p

    return job, order


async def test_higher_priority_starts_first(app: App) -> None:
    job, order = recorder(app)
    calls = [job.call(0) for _ in range(30)]  # type: ignore[attr-defined]
    calls += [job.options(priority=9).call(9) for _ in range(10)]  # type: ignore[attr-defined]
    calls += [job.options(priority=5).call(5) for _ in range(10)]  # type: ignore[attr-defined]
    jobs = await app.enqueue_many(calls)  # all waiting before the worker starts
    async with Worker(app, concurrency=1):
        await asyncio.gather(*(j.result(timeout=10) for j in jobs))
    assert sorted(order) == sorted(c.args[0] for c in calls)
    # one start in ten is a fair turn for the lower levels; all the others go highest first
    assert order[:9] == [9] * 9
    last_9, first_5 = max(i for i, p in enumerate(order) if p == 9), order.index(5)
    assert last_9 < first_5
    assert max(i for i, p in enumerate(order) if p == 5) < 25  # 5s before most of the 0s
    assert 0 in order[:10]  # ... but the 0s were not starved meanwhile


@pytest.mark.parametrize("concurrency", [1, 10, 13, 100])  # batches of 1, 5, 7, 50
async def test_lower_priority_is_never_starved_beyond_the_bound(app: App, concurrency: int) -> None:
    """While a backlog of high-priority jobs waits, every waiting level still gets at least one
    start in 100 (the documented bound) of the worker's starts, in the order they start."""
    job, order = recorder(app)
    calls = [job.options(priority=9).call(9) for _ in range(400)]  # type: ignore[attr-defined]
    for level in range(9):
        calls += [job.options(priority=level).call(level) for _ in range(3)]  # type: ignore[attr-defined]
    jobs = await app.enqueue_many(calls)
    async with Worker(app, concurrency=concurrency):
        await asyncio.gather(*(j.result(timeout=20) for j in jobs))
    for level in range(9):
        starts = [i for i, p in enumerate(order) if p == level]
        assert len(starts) == 3
        gaps = [b - a for a, b in zip([-1, *starts], starts, strict=False)]
        assert max(gaps) <= 100, (level, starts)
    # and the high level still gets nearly everything while it has a backlog
    assert order[:100].count(9) >= 90


async def test_priority_from_task_options_and_name(app: App) -> None:
    @app.task(priority=3)
    async def urgent() -> None: ...

    @app.task
    async def plain() -> None: ...

    assert (await (await plain.options(priority=2).enqueue()).info()).priority == 2
    assert (await (await plain.enqueue()).info()).priority == 0
    await app.redis.delete(*[level.stream for level in app.keys().levels])
    await urgent.enqueue()
    await urgent.options(priority=0).enqueue()
    await plain.options(priority=7).enqueue()
    await app.options("plain", priority=8).enqueue()
    levels = app.keys().levels
    lengths = [await app.redis.xlen(level.stream) for level in levels]
    assert lengths == [1, 0, 0, 1, 0, 0, 0, 1, 1, 0]
    stats = (await queue_stats(app))[0]
    assert stats.queued == 4
    assert stats.by_priority == {0: 1, 3: 1, 7: 1, 8: 1}


@pytest.mark.parametrize("bad", [10, -1, 2.5, True, "9"])
async def test_bad_priority_is_refused_and_nothing_is_written(app: App, bad: object) -> None:
    @app.task
    async def work() -> None: ...

    with pytest.raises((ValueError, TypeError), match=f"priority must be .*got {bad!r}"):
        await work.options(priority=bad).enqueue()  # type: ignore[arg-type]
    with pytest.raises((ValueError, TypeError), match=r"task 'other'.*priority"):
        app.task(name="other", priority=bad)(lambda: None)  # type: ignore[arg-type]
    assert await app.redis.keys(f"aioq:{{{app.name}:*") == []


async def test_delayed_and_retried_jobs_keep_their_priority(app: App) -> None:
    attempts: list[int] = []

    @app.task(retries=1, backoff=0.0)
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("once")
        return "ok"

    delayed = await flaky.options(priority=6, delay=0.2).enqueue()
    assert await delayed.status() is JobStatus.SCHEDULED
    async with Worker(app):
        assert await delayed.result(timeout=5) == "ok"
    assert len(attempts) == 2
    info = await app.redis.hget(app.keys().job(delayed.id), "priority")
    assert info == b"6"
    # everything ran through stream 6: its consumer group delivered both attempts
    groups = await app.redis.xinfo_groups(app.keys().level(6).stream)
    assert groups[0]["entries-read"] == 2
    assert await app.redis.xlen(app.keys().stream) == 0


async def test_idle_worker_wakes_at_once_for_any_priority(app: App) -> None:
    @app.task
    async def ping() -> float:
        return time.perf_counter()

    async with Worker(app) as worker:
        await parked(worker)
        for p in (0, 7, 9, 1):
            t0 = time.perf_counter()
            started = await ping.options(priority=p).enqueue()
            assert await started.result(timeout=5) - t0 < 0.5, p  # not the 2 s block timeout


async def test_a_burst_at_several_levels_to_a_parked_worker_runs_each_job_once(
    app: App,
) -> None:
    """A parked read takes one entry per level; with one free slot, the rest go back."""
    job, order = recorder(app)
    async with Worker(app, concurrency=1) as worker:
        await parked(worker)
        calls = [job.options(priority=p).call(p) for p in (2, 8, 5, 0)]  # type: ignore[attr-defined]
        jobs = await app.enqueue_many(calls)
        await asyncio.gather(*(j.result(timeout=10) for j in jobs))
    assert sorted(order) == [0, 2, 5, 8]
    # the parked read starts what woke it (Redis < 7.2 serves only the first stream written),
    # then the rest go highest first
    assert order[1:] == sorted(order[1:], reverse=True)
    for j in jobs:
        assert (await j.info()).attempts == 1


async def test_a_lapsed_lease_at_any_priority_is_reclaimed(redis_url: str, app: App) -> None:
    fast = App(app.name, redis_url=redis_url, visibility_timeout=0.3)
    done: list[str] = []

    @fast.task
    async def work() -> None:
        done.append("ran")

    job = await work.options(priority=4).enqueue()
    stream = fast.keys().level(4).stream
    await fast.redis.xgroup_create(stream, GROUP, id="0")
    # a worker that read the entry and died before starting it
    await fast.redis.xreadgroup(GROUP, "ghost", {stream: ">"}, count=1)
    async with Worker(fast):
        await job.result(timeout=5)
    assert done == ["ran"]
    await fast.aclose()


async def test_stopping_hands_jobs_back_to_their_own_stream(app: App) -> None:
    started = asyncio.Event()

    @app.task
    async def slow() -> None:
        started.set()
        await asyncio.sleep(30)

    job = await slow.options(priority=3).enqueue()
    async with Worker(app, shutdown_timeout=0.1):
        await asyncio.wait_for(started.wait(), 5)
    assert await job.status() is JobStatus.QUEUED
    assert await app.redis.xlen(app.keys().level(3).stream) == 1
    assert await app.redis.xlen(app.keys().stream) == 0


async def test_purge_empties_every_priority(app: App) -> None:
    @app.task
    async def work() -> None: ...

    for p in (0, 2, 9):
        await work.options(priority=p).enqueue()
    assert await purge_queue(app, app.default_queue) == (3, 3)
    assert (await queue_stats(app))[0].queued == 0


async def colliding_pair(app: App, calls: list[object]) -> list[Job[object]]:
    """Enqueue two calls at different priorities until their stream entries get the same id
    (each stream numbers its own entries, so that happens within one millisecond)."""
    for _ in range(50):
        jobs: list[Job[object]] = await app.enqueue_many(calls)  # type: ignore[arg-type]
        ids = [(await app.redis.xrange(app.keys().level(p).stream, count=1))[0][0] for p in (0, 5)]
        if ids[0] == ids[1]:
            return jobs
        await purge_queue(app, app.default_queue)
    raise AssertionError("no two entries with the same id in 50 tries")


async def test_cancelling_one_of_two_jobs_with_the_same_entry_id(app: App) -> None:
    """Entry ids repeat across priority streams: cancelling one job must not touch the other,
    and the cancelled one ends at once even while the other finishes first."""
    running = asyncio.Event()
    both: list[str] = []

    @app.task
    async def hold(name: str, seconds: float) -> str:
        both.append(name)
        if len(both) == 2:
            running.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)  # cleanup, while the other job finishes
            raise
        return name

    a, b = await colliding_pair(app, [hold.call("a", 30), hold.options(priority=5).call("b", 0.1)])
    async with Worker(app, concurrency=4):
        await asyncio.wait_for(running.wait(), 5)
        assert await a.cancel()
        assert await b.result(timeout=5) == "b"
        t0 = time.perf_counter()
        with pytest.raises(JobCancelled):
            await a.result(timeout=5)
        assert time.perf_counter() - t0 < 2  # not the visibility timeout (5 s)
    assert await b.status() is JobStatus.SUCCEEDED


async def test_an_idle_slot_takes_a_new_job_at_once_after_a_batch_with_fair_turns(
    app: App,
) -> None:
    """A batch mixing levels (fair turns placed inside it) must leave the worker knowing the
    newest entry of each stream, or its next parked read loses track of a new job."""
    started = asyncio.Event()
    count: list[int] = []

    @app.task
    async def long(i: int) -> None:
        count.append(i)
        if len(count) == 200:
            started.set()
        await asyncio.sleep(3)

    @app.task
    async def quick() -> float:
        return time.perf_counter()

    calls = [long.options(priority=9).call(0)] + [long.call(i) for i in range(1, 200)]
    await app.enqueue_many(calls)  # type: ignore[arg-type]
    async with Worker(app, concurrency=400) as worker:
        await asyncio.wait_for(started.wait(), 10)
        await parked(worker)  # parked again
        t0 = time.perf_counter()
        assert await (await quick.enqueue()).result(timeout=10) - t0 < 1


async def test_a_foreign_key_at_one_level_does_not_stop_the_others(app: App) -> None:
    @app.task
    async def ping(p: int) -> int:
        return p

    async with Worker(app):
        await app.redis.delete(app.keys().level(3).stream)
        await app.redis.set(app.keys().level(3).stream, "not a stream")  # another program's key
        jobs = [await ping.options(priority=p).enqueue(p) for p in (9, 0)]
        assert [await j.result(timeout=10) for j in jobs] == [9, 0]
    await app.redis.delete(app.keys().level(3).stream)
