"""Bounded queues (``App(queue_limits=...)``): an enqueue that would take a queue past its limit
(jobs not finished: queued, running, scheduled) raises ``QueueFull`` naming the queue and the
limit and writes nothing; ``enqueue_many`` is all or none per queue; ``wait_if_full`` waits
for room and is woken by a job finishing, not by polling; producer processes racing never
take the queue past its limit; bad limits are refused at ``App()``. Real redis-server."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from aioq import App, QueueFull, Worker, chain
from aioq.queue_limits import ROOM_RECHECK
from tests.apps.flowctl import BOUNDED_LIMIT
from tests.conftest import unique_name
from tests.helpers import ROOT

pytestmark = pytest.mark.anyio


@pytest.fixture
async def bounded(redis_url: str) -> AsyncIterator[App]:
    a = App(unique_name(), redis_url=redis_url, queue_limits={"emails": 3})
    yield a
    await a.aclose()


async def _size(app: App, queue: str) -> int:
    keys = app.keys(queue)
    n = int(await app.redis.zcard(keys.scheduled))
    for level in keys.levels:
        n += int(await app.redis.xlen(level.stream))
    return n


async def test_a_full_queue_refuses_and_writes_nothing(bounded: App) -> None:
    @bounded.task(queue="emails")
    async def send(to: str) -> None: ...

    @bounded.task
    async def other() -> None: ...

    await send.enqueue("a")
    await send.options(delay=60).enqueue("b")  # scheduled jobs count
    await send.options(priority=5).enqueue("c")  # every priority's stream counts
    with pytest.raises(QueueFull) as exc:
        await send.options(job_id="refused").enqueue("d")
    assert (exc.value.queue, exc.value.limit, exc.value.size) == ("emails", 3, 3)
    assert "queue 'emails' is full" in str(exc.value)
    assert "limit is 3" in str(exc.value)
    assert not await bounded.redis.exists(bounded.keys("emails").job("refused"))
    assert await _size(bounded, "emails") == 3
    await other.enqueue()  # other queues are not limited


async def test_a_resend_of_an_existing_job_is_not_refused(bounded: App) -> None:
    @bounded.task(queue="emails")
    async def send(to: str) -> None: ...

    first = await send.options(job_id="j1").enqueue("a")
    await send.enqueue("b")
    await send.enqueue("c")
    assert (await send.options(job_id="j1").enqueue("a")).id == first.id  # full, but exists


async def test_enqueue_many_is_all_or_none_per_queue(bounded: App) -> None:
    @bounded.task(queue="emails")
    async def send(to: str) -> None: ...

    @bounded.task
    async def other(i: int) -> None: ...

    await send.enqueue("a")
    with pytest.raises(QueueFull) as exc:
        await bounded.enqueue_many([send.call("b"), other.call(1), send.call("c"), send.call("d")])
    assert await _size(bounded, "emails") == 1  # none of the three
    assert [j.queue for j in exc.value.written] == ["default"]  # the other queue's job
    assert await _size(bounded, "default") == 1
    jobs = await bounded.enqueue_many([send.call("b"), send.call("c")])  # exactly fits
    assert len(jobs) == 2
    assert await _size(bounded, "emails") == 3


async def test_finished_jobs_make_room(bounded: App) -> None:
    @bounded.task(queue="emails")
    async def send(to: str) -> str:
        return to

    jobs = [await send.enqueue(str(i)) for i in range(3)]
    async with Worker(bounded, queues=["emails"]):
        for j in jobs:
            await j.result(timeout=5)
    await send.enqueue("after")  # running or done jobs no longer count once finished


async def test_wait_if_full_is_woken_by_a_finish(bounded: App) -> None:
    """A producer waiting for room returns right after a job finishes (well inside
    ROOM_RECHECK: pushed, not a poll), and gives up with QueueFull after wait_if_full."""
    gate = asyncio.Event()

    @bounded.task(queue="emails")
    async def send(to: str) -> str:
        await gate.wait()
        return to

    first = await send.enqueue("0")
    for i in range(1, 3):
        await send.enqueue(str(i))
    t0 = time.monotonic()
    with pytest.raises(QueueFull):
        await send.options(wait_if_full=0.3).enqueue("late")
    assert 0.3 <= time.monotonic() - t0 < 0.3 + ROOM_RECHECK
    async with Worker(bounded, queues=["emails"], concurrency=1):
        waiter = asyncio.ensure_future(send.options(wait_if_full=10).enqueue("waits"))
        await asyncio.sleep(0.2)
        assert not waiter.done()  # still full: three jobs, one running
        gate.set()
        await first.result(timeout=5)
        finished = time.monotonic()
        job = await asyncio.wait_for(waiter, 5)
        assert time.monotonic() - finished < ROOM_RECHECK / 2
        assert await job.result(timeout=5) == "waits"


async def test_producer_processes_never_pass_the_limit(app: App) -> None:
    """4 producer processes, 40 concurrent enqueues each, into a queue limited to 60: exactly
    60 written, the other 100 refused, whatever the interleaving."""
    env = {"AIOQ_TEST_APP": app.name, "AIOQ_REDIS_URL": str(app.redis_url)}
    cmd = [sys.executable, "-m", "tests.apps.flowctl", "fill", "40"]
    env["PYTHONPATH"] = str(ROOT)
    out = asyncio.subprocess.PIPE
    procs = [
        await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, env=env, stdout=out) for _ in range(4)
    ]
    outs = [orjson.loads((await p.communicate())[0]) for p in procs]
    assert [o["errors"] for o in outs] == [[]] * 4
    assert sum(o["written"] for o in outs) == BOUNDED_LIMIT
    assert sum(o["refused"] for o in outs) == 4 * 40 - BOUNDED_LIMIT
    assert await _size(app, "bounded") == BOUNDED_LIMIT


async def test_a_workflow_is_admitted_or_refused_whole(bounded: App) -> None:
    @bounded.task(queue="emails")
    async def send(to: str) -> str:
        return to

    await send.enqueue("a")
    await send.enqueue("b")
    await send.enqueue("c")
    with pytest.raises(QueueFull):
        await chain(send.s("x"), send.si("y")).enqueue()
    names = [k async for k in bounded.redis.scan_iter(match=f"aioq:{{{bounded.name}:*}}:flow:*")]
    assert names == []  # no workflow record, no held step
    assert await _size(bounded, "emails") == 3


@pytest.mark.parametrize(
    ("limits", "error", "message"),
    [
        ({"emails": 0}, ValueError, "queue_limits['emails'] must be >= 1, got 0"),
        ({"emails": -5}, ValueError, "queue_limits['emails'] must be >= 1, got -5"),
        ({"emails": 2.5}, TypeError, "queue_limits['emails'] must be a whole number"),
        ({"emails": True}, TypeError, "queue_limits['emails'] must be a whole number"),
        ({"bad queue": 5}, ValueError, "queue name 'bad queue' must not contain"),
        ([("emails", 5)], TypeError, "queue_limits must be a mapping"),
    ],
)
def test_bad_limits_are_refused_at_app(
    limits: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as exc:
        App("x", queue_limits=limits)  # type: ignore[arg-type]
    assert message in str(exc.value)


async def test_enqueue_sync_is_limited_and_deduplicated(bounded: App) -> None:
    """The blocking producer (``enqueue_sync``) runs the same script: a dedup hit returns
    the existing job, a full queue raises QueueFull, and wait_if_full gives up in time."""

    @bounded.task(queue="emails")
    async def send(to: str) -> None: ...

    unique = send.options(unique_for=30)
    a = await asyncio.to_thread(unique.enqueue_sync, "a")
    assert (await asyncio.to_thread(unique.enqueue_sync, "a")).id == a.id
    await send.enqueue("b")
    await send.enqueue("c")
    with pytest.raises(QueueFull, match="queue 'emails' is full"):
        await asyncio.to_thread(send.enqueue_sync, "d")
    t0 = time.monotonic()
    with pytest.raises(QueueFull):
        await asyncio.to_thread(send.options(wait_if_full=0.3).enqueue_sync, "e")
    assert 0.3 <= time.monotonic() - t0 < 0.3 + ROOM_RECHECK
    assert await _size(bounded, "emails") == 3
    bounded.close()
