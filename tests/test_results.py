"""The result subscription (``aioq/results.py``) and what ``job.result()`` makes of a
completion message: the outcome carried in the message, the stored record whenever the
message does not carry it (older workers' bare statuses, other programs' messages, large
results), RESP3 with the read behind the SUBSCRIBE, and RESP2."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

import aioq.results
from aioq import App, JobNotFound, TaskFailed, Worker
from aioq.results import subscribe_confirmed

from .conftest import unique_name

pytestmark = pytest.mark.anyio


async def subscribed(app: App, channel: str, n: int = 1) -> None:
    """Wait until ``channel`` has ``n`` subscribers."""
    for _ in range(250):
        counts: list[Any] = await app.redis.pubsub_numsub(channel)
        if counts[0][1] == n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{channel} has not got {n} subscriber(s)")


async def test_the_outcome_travels_in_the_notification(app: App) -> None:
    """'<status> <payload>': the result JSON, or the error, type and traceback as JSON."""

    @app.task
    async def value() -> dict[str, int]:
        return {"a": 1}

    @app.task
    async def boom() -> None:
        raise ValueError("no good")

    keys = app.keys()
    pubsub: Any = app.redis.pubsub()
    await subscribe_confirmed(pubsub, [keys.done("v1").encode(), keys.done("b1").encode()])
    async with Worker(app):
        ok = await value.options(job_id="v1").enqueue()
        assert await ok.result(timeout=5) == {"a": 1}
        bad = await boom.options(job_id="b1").enqueue()
        with pytest.raises(TaskFailed) as err:
            await bad.result(timeout=5)
    assert err.value.exc_type == "ValueError"
    assert "no good" in str(err.value)
    assert "raise ValueError" in err.value.traceback
    messages = {}
    while len(messages) < 2:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert msg is not None
        messages[msg["channel"].decode()] = msg["data"]
    await pubsub.aclose()
    assert messages[keys.done("v1")] == b'succeeded {"a":1}'
    head, _, payload = messages[keys.done("b1")].partition(b" ")
    assert head == b"failed"
    carried = orjson.loads(payload)
    assert (carried["exc_type"], carried["error"]) == ("ValueError", "no good")
    assert "raise ValueError" in carried["traceback"]


@pytest.mark.parametrize(
    ("message", "stored", "expected"),
    [
        (b"succeeded", {"status": "succeeded", "result": "42"}, 42),  # an older worker's
        (b"succeeded not json", {"status": "succeeded", "result": "7"}, 7),
        (b"failed [1, 2]", {"status": "failed", "error": "bad", "exc_type": "KeyError"},
         TaskFailed),
        (b"expired", {"status": "expired", "error": "late"}, TaskFailed),
        (b"purged", None, JobNotFound),
        (b"something else", {"status": "succeeded", "result": "[1]"}, [1]),
    ],
)  # fmt: skip
async def test_a_message_without_the_outcome_makes_the_waiter_read_the_record(
    app: App, message: bytes, stored: dict[str, str] | None, expected: Any
) -> None:
    """Bare statuses, other programs' payloads and garbage: the stored record decides."""

    @app.task
    async def never() -> None:
        return None

    job = await never.enqueue()  # no worker: it stays queued until the test finishes it
    waiter = asyncio.ensure_future(job.result(timeout=10))
    channel = app.keys().done(job.id)
    await subscribed(app, channel)
    assert not waiter.done()
    key = app.keys().job(job.id)
    if stored is None:
        await app.redis.delete(key)
    else:
        await app.redis.hset(key, mapping=stored)
    await app.redis.publish(channel, message)
    if isinstance(expected, type) and issubclass(expected, Exception):
        with pytest.raises(expected):
            await waiter
    else:
        assert await waiter == expected


async def test_a_cancelled_message_needs_no_read(app: App) -> None:
    @app.task
    async def never() -> None:
        return None

    job = await never.enqueue()
    waiter = asyncio.ensure_future(job.result(timeout=10))
    await subscribed(app, app.keys().done(job.id))
    assert await job.cancel()  # queued: cancelled at once, published bare
    with pytest.raises(aioq.JobCancelled):
        await waiter


async def test_a_large_result_is_read_from_the_record(app: App) -> None:
    """Over 64 KB the message is the bare status and the waiter reads the record."""

    @app.task
    async def big() -> str:
        return "x" * 70_000

    pubsub: Any = app.redis.pubsub()
    await subscribe_confirmed(pubsub, [app.keys().done("big1").encode()])
    async with Worker(app):
        job = await big.options(job_id="big1").enqueue()
        assert await job.result(timeout=5) == "x" * 70_000
    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
    await pubsub.aclose()
    assert msg is not None
    assert msg["data"] == b"succeeded"


async def test_many_waiters_each_get_their_own_job(app: App) -> None:
    """Reads behind SUBSCRIBEs on one connection are handed back in order: every waiter,
    several per job, some of jobs finished before they subscribed, gets its own value."""

    @app.task
    async def echo(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 5))
        return i

    async with Worker(app, concurrency=20):
        early = [await echo.enqueue(i) for i in range(20)]
        for job in early:
            await job.result(timeout=5)
        late = [await echo.enqueue(i) for i in range(20, 60)]
        jobs = early + late + late[:10]
        values = await asyncio.gather(*(j.result(timeout=10) for j in jobs))
    assert values == [*range(60), *range(20, 30)]


async def test_the_channel_is_unsubscribed_after_the_result(app: App) -> None:
    @app.task
    async def one() -> int:
        return 1

    async with Worker(app):
        job = await one.enqueue()
        assert await job.result(timeout=5) == 1
        await subscribed(app, app.keys().done(job.id), 0)  # within UNSUBSCRIBE_AFTER


async def test_resp2_subscription_works_the_same(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without RESP3 (an old hiredis or server) the read follows the confirmation."""
    monkeypatch.setattr(aioq.results, "_PUSH", None)
    app = App(unique_name(), redis_url=redis_url)

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task
    async def boom() -> None:
        raise KeyError("k")

    try:
        async with Worker(app):
            assert await (await add.enqueue(1, 2)).result(timeout=5) == 3
            with pytest.raises(TaskFailed) as err:
                await (await boom.enqueue()).result(timeout=5)
            assert err.value.exc_type == "KeyError"
            jobs = [await add.enqueue(i, 1) for i in range(10)]
            assert await asyncio.gather(*(j.result(timeout=5) for j in jobs)) == [
                i + 1 for i in range(10)
            ]
        assert app._results()._resp3 is False
    finally:
        await app.aclose()


async def test_an_idle_worker_writes_the_outcome_from_the_jobs_own_task(app: App) -> None:
    """No backlog: the finished job's task writes its outcome (no turn through the
    completer's loop); with a backlog the completer's loop writes the batches."""

    @app.task
    async def one() -> int:
        return 1

    writers: list[str] = []
    async with Worker(app) as w:
        flush = w.completer._flush  # under the completer's lock

        async def recording() -> None:
            task = asyncio.current_task()
            if len(w.completer):  # a flush with something to write
                writers.append(task.get_name() if task is not None else "")
            await flush()

        w.completer._flush = recording  # type: ignore[method-assign]
        for _ in range(3):
            await asyncio.sleep(0.05)  # the fetcher parks on the empty queue
            assert await (await one.enqueue()).result(timeout=5) == 1
        assert len(writers) == 3
        assert "aioq-complete" not in writers
        writers.clear()
        await app.enqueue_many([one.call() for _ in range(500)])
        for _ in range(250):
            if w.jobs_done >= 503:
                break
            await asyncio.sleep(0.02)
        assert "aioq-complete" in writers
