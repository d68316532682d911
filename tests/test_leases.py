"""The edges of a lease, against real redis-server: a worker never takes over its own live jobs,
a task that blocks the event loop keeps its lease while its process lives (up to
``max_loop_block``), replies lost after a job-starting script ran are recovered at once rather
than after a visibility timeout, and every way a job ends goes through the same ``finish``."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from aioq import App, JobStatus, Worker, current_job
from aioq.keys import PRIORITIES
from aioq.scripts import WorkerArgs
from tests.apps.faulty import side_key
from tests.conftest import unique_name
from tests.helpers import Spawned, WorkerProcess, eventually, parked, processes_parked

pytestmark = pytest.mark.anyio

TARGET = "tests.apps.faulty:app"


@pytest.fixture
def workers(redis_url: str) -> Iterator[Any]:
    spawned = Spawned()

    def spawn(app_name: str, vt: float) -> WorkerProcess:
        env = {"AIOQ_TEST_APP": app_name, "AIOQ_TEST_VT": str(vt)}
        return spawned.start(TARGET, redis_url, env)

    yield spawn
    spawned.close()


async def runs(app: App, job_id: str) -> list[int]:
    return [int(p) for p in await app.redis.lrange(side_key(app.name, f"runs:{job_id}"), 0, -1)]


# -- a worker never takes over its own live jobs ----------------------------------------


async def test_reclaim_never_restarts_the_callers_own_running_job(app: App) -> None:
    """XAUTOCLAIM matches the caller's own idle entries: RECLAIM hands them back as held."""

    @app.task
    async def one() -> None: ...

    job = await one.enqueue()
    keys = app.keys()
    await app.scripts.prepare([keys], {})
    me, other = (WorkerArgs(c, 5, 60, 1000) for c in ("me", "other"))
    assert len(await app.scripts.fetch(keys, me, 10, 0)) == 1
    await asyncio.sleep(0.05)  # idle past the 10 ms "lease" below
    cursors = [b"0-0"] * PRIORITIES

    _, started, held = await app.scripts.reclaim(keys, me, 10, 10, cursors)
    assert started == []
    assert [r[1] for r in held] == [job.id.encode()]
    assert held[0][2] == 1  # the attempt it runs, unchanged
    assert (await job.info()).attempts == 1

    await asyncio.sleep(0.05)
    _, started, held = await app.scripts.reclaim(keys, other, 10, 10, cursors)
    assert [r[1] for r in started] == [job.id.encode()]
    assert held == []
    info = await job.info()
    assert info.attempts == 2
    assert info.worker == "other"


async def test_a_loop_blocked_past_the_lease_does_not_restart_its_own_jobs(
    redis_url: str,
) -> None:
    """A job whose neighbour blocks the loop for longer than the lease runs once, attempt 1."""
    app = App(unique_name(), redis_url=redis_url, visibility_timeout=1.0)
    starts: list[int] = []

    @app.task
    async def long() -> str:
        starts.append(current_job().attempt)
        await asyncio.sleep(3.0)
        return "done"

    @app.task
    async def hog() -> None:
        time.sleep(1.6)  # noqa: ASYNC251 - blocking the loop is the point

    try:
        async with Worker(app, concurrency=10):
            job = await long.enqueue()
            await eventually(lambda: asyncio.sleep(0, starts), 5, "the long job started")
            await hog.enqueue()
            assert await job.result(timeout=10) == "done"
        assert starts == [1]
        assert (await job.info()).attempts == 1
    finally:
        await app.aclose()


# -- a task that blocks the event loop keeps its lease ------------------------------------


@pytest.mark.slow
async def test_a_job_blocking_the_loop_keeps_its_lease_beside_another_worker(
    app: App, workers: Any
) -> None:
    """``time.sleep(2.5 x visibility_timeout)`` in an async task: one run, ``attempts == 1``;
    the worker logs a warning naming the job."""
    vt = 1.5
    pair = [workers(app.name, vt), workers(app.name, vt)]
    for w in pair:
        await processes_parked(app, w)
    job = await app.enqueue("block", 2.5 * vt)
    with anyio.fail_after(20):
        pid = await job.result()
    await asyncio.sleep(vt)  # room for a wrong takeover to show
    assert await runs(app, job.id) == [pid]
    info = await job.info()
    assert info.attempts == 1
    assert info.status is JobStatus.SUCCEEDED
    blocker = next(w for w in pair if w.pid == pid)
    for w in pair:
        w.signal(signal.SIGTERM)
        assert await w.exited(15) == 0
        assert "took over" not in w.output
    assert "event loop blocked" in blocker.output
    assert job.id in blocker.output
    assert "event loop ran again after" in blocker.output


@pytest.mark.slow
async def test_a_loop_blocked_longer_than_max_loop_block_loses_its_jobs(
    app: App, workers: Any
) -> None:
    """A truly hung worker must still lose its jobs: past ``max_loop_block`` the lease thread
    stops renewing, another worker takes the job over, and the hung copy's outcome is fenced."""
    vt = 1.0
    hung = App(app.name, redis_url=app.redis_url, visibility_timeout=vt)
    others: list[WorkerProcess] = []

    @hung.task(name="block")  # as tests/apps/faulty.py's, which the other worker runs
    async def block(seconds: float, first_attempt_only: bool = False) -> int:
        ctx = current_job()
        await hung.redis.rpush(side_key(app.name, f"runs:{ctx.id}"), os.getpid())
        if ctx.attempt == 1:
            others.append(workers(app.name, vt))  # starts while this worker hangs
            time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop is the point
        return os.getpid()

    try:
        async with Worker(hung, concurrency=5, max_loop_block=0.5):
            job = await block.enqueue(6.0, True)
            with anyio.fail_after(30):
                pid = await job.result()
        assert others
        assert pid == others[0].pid
        assert await runs(app, job.id) == [os.getpid(), pid]
        assert (await job.info()).attempts == 2
    finally:
        await hung.aclose()


# -- replies lost after a job-starting script ran ------------------------------------------


async def deliveries(app: App, job_id: str) -> tuple[int, int]:
    """(attempts, deliveries) from the job record: a lost reply must count neither twice."""
    a, d = await app.redis.hmget(app.keys().job(job_id), ["attempts", "deliveries"])
    return int(a), int(d)


def drop_reply(monkeypatch: pytest.MonkeyPatch, app: App, sha: str, nth: int) -> list[Any]:
    """Make the connection fail once while reading the ``nth`` reply (0-based) of a write
    carrying script ``sha``, after Redis has run it and when the reply started a job: the reply
    is lost, as when the connection resets mid-reply. Returns the list the dropped reply is
    appended to. Install it before the worker starts (a write is marked when it is sent)."""
    import aioq.connection

    cls = app.redis.connection_pool.connection_class
    start_new_sha = app.scripts._start_new.sha
    write, read = aioq.connection._write, cls.read_response
    dropped: list[Any] = []
    marker = sha.encode()

    async def lane_write(conn: Any, command: Any) -> None:  # how the command lane sends
        data = command if isinstance(command, bytes) else b"".join(command)
        conn._aioq_reads = 0 if marker in data else None
        await write(conn, command)

    async def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        reply = await read(self, *args, **kwargs)
        count = getattr(self, "_aioq_reads", None)
        if count is not None:
            self._aioq_reads = count + 1
            if (
                count == nth
                and not dropped
                and (
                    reply[0] if sha == start_new_sha else reply  # START_NEW: {rows, more}
                )
            ):
                dropped.append(reply)
                raise RedisConnectionError("Connection reset by peer (dropped by the test)")
        return reply

    monkeypatch.setattr(aioq.connection, "_write", lane_write)
    monkeypatch.setattr(cls, "read_response", read_response)
    return dropped


async def test_a_lost_fetch_reply_is_recovered_at_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FETCH is never resent: the jobs its lost reply held run now, once, as attempt 1."""
    app = App(unique_name(), redis_url=redis_url, visibility_timeout=30.0)

    @app.task
    async def one(i: int) -> int:
        return i

    try:
        jobs = [await one.enqueue(i) for i in range(5)]
        dropped = drop_reply(monkeypatch, app, app.scripts._fetch.sha, 0)
        async with Worker(app, concurrency=10):
            with anyio.fail_after(5):  # not the 30 s visibility timeout
                assert [await j.result() for j in jobs] == list(range(5))
        assert dropped, "the test did not drop the reply"
        assert len(dropped[0]) == 5
        for j in jobs:
            assert await deliveries(app, j.id) == (1, 1)
    finally:
        await app.aclose()


async def test_a_lost_start_reply_of_a_parked_worker_is_recovered_at_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parked read + START_NEW pair is never resent either: its job runs now, once."""
    app = App(unique_name(), redis_url=redis_url, visibility_timeout=30.0)

    @app.task
    async def one(i: int) -> int:
        return i

    try:
        dropped = drop_reply(monkeypatch, app, app.scripts._start_new.sha, 1)
        async with Worker(app, concurrency=10) as worker:
            await parked(worker)
            job = await one.enqueue(7)
            with anyio.fail_after(5):
                assert await job.result() == 7
        assert dropped, "the test did not drop the reply"
        assert len(dropped[0][0]) == 1
        assert await deliveries(app, job.id) == (1, 1)
    finally:
        await app.aclose()


# -- every way a job ends goes through finish() ---------------------------------------------


async def recent_ids(app: App) -> set[str]:
    import orjson

    out: set[str] = set()
    for _, fields in await app.redis.xrange(app.keys().recent):
        out |= set(orjson.loads(fields[b"ids"]))
    return out


async def test_cancelled_and_expired_jobs_are_noted_like_the_others(app: App) -> None:
    """CANCEL and PROMOTE's expiry finish jobs as the worker does: recent stream, expiry."""

    @app.task
    async def one() -> None: ...

    cancelled = await one.options(delay=60).enqueue()
    assert await cancelled.cancel()
    expired = await one.options(delay=0.05, expires=0.01).enqueue()
    await asyncio.sleep(0.1)
    await app.scripts.promote(app.keys(), app.result_ttl)
    assert await cancelled.status() is JobStatus.CANCELLED
    assert await expired.status() is JobStatus.EXPIRED
    assert {cancelled.id, expired.id} <= await recent_ids(app)
    for j in (cancelled, expired):
        assert 0 < await app.redis.ttl(app.keys().job(j.id)) <= app.result_ttl


async def test_a_job_that_finished_while_redis_answered_is_no_orphan(app: App) -> None:
    """RECOVER/RECLAIM read a record before its outcome landed; by the time the answer
    arrives the worker has finished and written the job: it must not run again."""
    from aioq.worker.lease import holding, orphans

    @app.task
    async def one() -> None: ...

    worker = Worker(app)
    keys = app.keys()
    row = [b"1-0", b"job", 1, b"one", b"[]", b"{}", None, b"0", 0, None]
    task = asyncio.get_running_loop().create_future()
    worker.runner.running[keys] = {b"1-0": task}  # type: ignore[dict-item]
    before = holding(worker, keys)  # the question goes out while the job runs
    del worker.runner.running[keys][b"1-0"]  # ... it finishes and is written meanwhile
    assert orphans(worker, keys, [row], before) == []
    assert orphans(worker, keys, [row], set()) == [row]  # never ran here: an orphan
    task.cancel()
