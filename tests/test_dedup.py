"""Deduplication and debounce (``options(unique_for=, debounce=, unique_key=)``): the existing
job comes back and nothing is written while the key is held; one script decides, so 50
concurrent producers (several App instances, and producer processes) create exactly one job;
a debounced key runs once, with the last arguments, ``debounce`` after the last enqueue; bad
input is refused before anything is written. Real redis-server."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import orjson
import pytest

from aioq import App, Job, JobStatus, Worker, chain
from aioq.testing import drain
from tests.conftest import unique_name
from tests.helpers import ROOT, eventually

pytestmark = pytest.mark.anyio


async def _producer(env: dict[str, str], mode: str, n: int) -> asyncio.subprocess.Process:
    """``python -m tests.apps.flowctl MODE N``: a producer process (its JSON on stdout)."""
    cmd = [sys.executable, "-m", "tests.apps.flowctl", mode, str(n)]
    out = asyncio.subprocess.PIPE
    return await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, env=env, stdout=out)


async def _job_keys(app: App) -> set[bytes]:
    return {k async for k in app.redis.scan_iter(match=f"aioq:{{{app.name}:*}}:job:*")}


async def _stream_len(app: App, queue: str = "default") -> int:
    return int(await app.redis.xlen(app.keys(queue).stream))


async def test_unique_returns_the_existing_job_and_writes_nothing(app: App) -> None:
    """While the first job is queued, a second enqueue of the same call (the same arguments
    spelled another way too) returns its handle and writes no record, entry or lock."""

    @app.task
    async def add(x: int, y: int = 0) -> int:
        return x + y

    first = await add.options(unique_for=30).enqueue(1, 2)
    again = await add.options(unique_for=30).enqueue(1, y=2)
    same = await add.options(unique_for=30).enqueue(x=1, y=2)
    other = await add.options(unique_for=30).enqueue(1, 3)
    assert again.id == same.id == first.id
    assert other.id != first.id
    assert await _stream_len(app) == 2
    assert len(await _job_keys(app)) == 2
    # a plain enqueue of the same call is not deduplicated
    assert (await add.enqueue(1, 2)).id != first.id


async def test_unique_key_and_task_scope(app: App) -> None:
    """An explicit unique_key collapses different arguments; keys are per task."""

    @app.task
    async def sync(user: str, full: bool = False) -> str:
        return user

    @app.task
    async def other(user: str, full: bool = False) -> str:
        return user

    a = await sync.options(unique_for=30, unique_key="u1").enqueue("u1")
    b = await sync.options(unique_for=30, unique_key="u1").enqueue("u1", full=True)
    c = await other.options(unique_for=30, unique_key="u1").enqueue("u1")
    assert a.id == b.id != c.id
    info = await a.info()
    assert info.kwargs == {}  # the first job's arguments stand


async def test_unique_holds_while_running_and_for_the_window_after(app: App) -> None:
    """Held while running and for unique_for after the finish (any final status); then a
    new job; the lock expires the window after the finish (no key stays behind)."""
    release = asyncio.Event()

    @app.task
    async def slow() -> str:
        await release.wait()
        return "done"

    opts = slow.options(unique_for=0.6)
    first = await opts.enqueue()
    async with Worker(app, concurrency=2):
        await eventually(lambda: _is(first, JobStatus.RUNNING), 5, "the job running")
        assert (await opts.enqueue()).id == first.id  # running
        release.set()
        assert await first.result(timeout=5) == "done"
        assert (await opts.enqueue()).id == first.id  # finished < 0.6 s ago
        info = await first.info()
        assert info.finished_at is not None
        lock = app.keys().unique(f"slow:{_call_key(app, 'slow')}")
        ttl = await app.redis.pttl(lock)
        assert 0 < ttl <= 600  # the unlock set it to expire the window after the finish
        window_end = info.finished_at.timestamp() + 0.6
        await asyncio.sleep(max(0.0, window_end - time.time()) + 0.05)
        second = await opts.enqueue()
        assert second.id != first.id
        assert await second.result(timeout=5) == "done"


async def _is(job: Job[Any], status: JobStatus) -> bool:
    return await job.status() == status


def _call_key(app: App, task: str) -> str:
    from aioq.dedup import call_key

    return call_key(app.tasks[task], (), {})


async def test_unique_for_zero_holds_until_finished(app: App) -> None:
    @app.task
    async def job() -> int:
        return 1

    first = await job.options(unique_for=0).enqueue()
    assert (await job.options(unique_for=0).enqueue()).id == first.id
    await drain(app)
    assert (await job.options(unique_for=0).enqueue()).id != first.id


async def test_fifty_concurrent_producers_create_exactly_one(redis_url: str) -> None:
    """50 concurrent enqueues of one unique call from 5 App instances (5 connection pools)
    and, at the same moment, 3 producer processes doing 20 each: one job, one id for all."""
    name = unique_name()
    apps = [App(name, redis_url=redis_url) for _ in range(5)]
    for a in apps:

        @a.task
        async def unique_add(x: int, y: int) -> int:
            return x + y

    env = {"AIOQ_TEST_APP": name, "AIOQ_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    procs = [await _producer(env, "unique", 20) for _ in range(3)]
    try:
        calls = [a.tasks["unique_add"].options(unique_for=60) for a in apps]
        jobs = await asyncio.gather(*(calls[i % 5].enqueue(1, 2) for i in range(50)))
        outs = [orjson.loads((await p.communicate())[0]) for p in procs]
        ids = {j.id for j in jobs} | {i for o in outs for i in o["ids"]}
        assert len(ids) == 1, ids
        assert await _stream_len(apps[0]) == 1
        assert len(await _job_keys(apps[0])) == 1
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        for a in apps:
            await a.aclose()


async def test_debounce_runs_once_with_the_last_arguments(app: App) -> None:
    """20 enqueues 50 ms apart into one key: one job, one run, with the last enqueue's
    arguments, starting at least `debounce` after the last enqueue (Redis' clock)."""
    runs: list[int] = []

    @app.task
    async def reindex(n: int) -> int:
        runs.append(n)
        return n

    debounce = 0.4
    jobs = []
    async with Worker(app):
        for i in range(20):
            last_sent = (await app.redis.time())[0] + (await app.redis.time())[1] / 1e6
            jobs.append(await reindex.options(debounce=debounce, unique_key="idx").enqueue(i))
            await asyncio.sleep(0.05)
        assert len({j.id for j in jobs}) == 1
        assert (await jobs[0].info()).wait_reason == "debounce"
        assert await jobs[-1].result(timeout=5) == 19
        await asyncio.sleep(debounce + 0.2)  # nothing else comes
    assert runs == [19]
    info = await jobs[0].info()
    assert info.started_at is not None
    assert info.started_at.timestamp() >= last_sent + debounce - 0.002  # ms rounding
    # after it ran, the key starts a new job
    fresh = await reindex.options(debounce=debounce, unique_key="idx").enqueue(99)
    assert fresh.id != jobs[0].id


async def test_debounce_keys_are_independent(app: App) -> None:
    @app.task
    async def touch(k: str) -> str:
        return k

    a1 = await touch.options(debounce=5).enqueue("a")
    b1 = await touch.options(debounce=5).enqueue("b")
    a2 = await touch.options(debounce=5).enqueue("a")  # the default key: the arguments
    assert a1.id == a2.id != b1.id
    assert await app.redis.zcard(app.keys().scheduled) == 2


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"unique_for": -1}, ValueError, "unique_for must be >= 0 seconds, got -1"),
        ({"debounce": -0.5}, ValueError, "debounce must be > 0 seconds, got -0.5"),
        ({"debounce": 0}, ValueError, "debounce must be > 0 seconds, got 0"),
        ({"unique_for": float("nan")}, ValueError, "unique_for must be >= 0 seconds"),
        ({"unique_for": "60"}, TypeError, "unique_for must be seconds (a number), got '60'"),
        ({"unique_for": 5, "debounce": 5}, ValueError, "give unique_for= or debounce=, not both"),
        ({"unique_key": "k"}, ValueError, "unique_key= needs unique_for= or debounce="),
        ({"unique_for": 5, "unique_key": 7}, TypeError, "unique_key must be a non-empty str"),
        ({"unique_for": 5, "unique_key": "x" * 300}, ValueError, "longer than 256"),
        ({"debounce": 5, "delay": 3}, ValueError, "cannot go with delay= or eta="),
        ({"debounce": 5, "job_id": "j1"}, ValueError, "cannot go with job_id="),
        ({"wait_if_full": -2}, ValueError, "wait_if_full must be >= 0 seconds, got -2"),
    ],
)
async def test_bad_options_are_refused_naming_the_value(
    app: App, options: dict[str, object], error: type[Exception], message: str
) -> None:
    @app.task
    async def add(x: int) -> int:
        return x

    with pytest.raises(error) as exc:
        await add.options(**options).enqueue(1)  # type: ignore[arg-type]
    assert message in str(exc.value)
    assert "'add'" in str(exc.value)  # names the task
    assert await _job_keys(app) == set()


async def test_workflow_steps_cannot_be_deduplicated(app: App) -> None:
    """A chain with a unique step, or a unique job with a callback, is refused before
    anything is written: a duplicate would leave the workflow without its step."""

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(ValueError, match="apply to jobs enqueued alone"):
        await chain(add.s(1, 2), add.options(unique_for=5).s(3)).enqueue()
    with pytest.raises(ValueError, match="apply to jobs enqueued alone"):
        await add.options(debounce=1, on_success=add.s(1)).enqueue(1, 2)
    assert await _job_keys(app) == set()
    assert [k async for k in app.redis.scan_iter(match=f"aioq:{{{app.name}:*")] == []
