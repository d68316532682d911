"""aioq behind Redis Sentinel (``tests/ha.py``: a master, a replica, 3 sentinels): a worker
process and a producer follow a failover (the master SIGKILLed under load) without a restart;
what asynchronous replication can lose in the failover window, and ``durable=True``, which
returns only once a replica has the job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from aioq import App, JobStatus, NotDurable, RedisUnavailable, Worker
from aioq.scripts import enqueue as enqueue_scripts

from .conftest import unique_name
from .ha import LocalSentinel
from .helpers import Spawned, eventually
from .netfault import FaultProxy

pytestmark = pytest.mark.anyio


REPLICATION_LATENCY = 0.005
"""Seconds the replica's link to the master adds each way (a replica in another zone)."""


@pytest.fixture
async def deployment() -> AsyncIterator[tuple[LocalSentinel, FaultProxy]]:
    """A master, a replica following it through a proxy adding ``REPLICATION_LATENCY``, and
    3 sentinels."""
    s = LocalSentinel(down_after_ms=1000)
    proxy = await FaultProxy(s.master).start()
    proxy.latency = REPLICATION_LATENCY
    try:
        await asyncio.to_thread(s.start, proxy.port)
        yield s, proxy
    finally:
        s.stop()
        await proxy.aclose()


async def statuses(app: App, ids: list[str]) -> list[bytes | None]:
    async with app.redis.pipeline(transaction=False) as pipe:
        for jid in ids:
            pipe.hget(app.keys().job(jid), "status")
        return list(await pipe.execute())


async def test_a_worker_and_a_producer_follow_a_failover(
    deployment: tuple[LocalSentinel, FaultProxy],
) -> None:
    """The master's host dies (SIGKILL, and the replication bytes in flight with it) while
    10 producers enqueue and a worker process runs the jobs: both go on with the promoted
    replica, unrestarted; every job enqueued after the failover completes, and what is lost
    is only what the master acknowledged within the replication delay before it died."""
    sentinel, proxy = deployment
    app = App(unique_name(), redis_url=sentinel.url, visibility_timeout=2.0)
    env = {"AIOQ_TEST_APP": app.name, "AIOQ_TEST_VT": "2", "AIOQ_TEST_MAX_DELIVERIES": "5"}
    spawned = Spawned()
    acked: dict[str, float] = {}  # job id -> when the enqueue returned
    errors: list[str] = []
    stop = asyncio.Event()

    async def produce(lane: int) -> None:  # 10 of them: 10 enqueues in flight
        i = 0
        while not stop.is_set():
            jid = f"p{lane}-{i}"
            try:  # the same job id until it is acknowledged: idempotent
                await app.options("work", job_id=jid).enqueue(i, 2)
            except RedisUnavailable as exc:
                errors.append(str(exc))
                await asyncio.sleep(0.05)
                continue
            acked[jid] = time.monotonic()
            i += 1

    try:
        worker = spawned.start("tests.apps.faulty:app", sentinel.url, env, "--concurrency", "20")
        producers = [asyncio.create_task(produce(k)) for k in range(10)]

        async def enqueued(n: int, since: float = 0.0) -> bool:
            return sum(t > since for t in acked.values()) >= n

        await eventually(lambda: enqueued(300), 30, "300 jobs enqueued")
        killed = time.monotonic()
        sentinel.kill_master()
        proxy.reset_all()  # what the replica had not received yet dies with the host
        await asyncio.to_thread(sentinel.failed_over)
        failed_over = time.monotonic()
        await eventually(lambda: enqueued(200, failed_over), 30, "200 enqueued after failover")
        stop.set()
        await asyncio.gather(*producers)
        # acknowledged after the promotion: written on the new master
        after = [j for j, t in acked.items() if t > failed_over]
        before = [j for j, t in acked.items() if t <= failed_over]

        async def after_done() -> bool:
            got = await statuses(app, after)
            return got.count(b"succeeded") == len(after)

        await eventually(after_done, 30, "every job enqueued after the failover to succeed")
        got = await statuses(app, before)
        lost = sorted(acked[j] - killed for j, s in zip(before, got, strict=True) if s is None)
        print(
            f"failover in {failed_over - killed:.2f}s; {len(lost)} of {len(before)} jobs "
            "acknowledged before it were lost, acknowledged from "
            f"{lost[0] * 1000 if lost else 0:.1f} to {lost[-1] * 1000 if lost else 0:.1f} ms "
            f"after the kill; {len(errors)} enqueue attempts failed meanwhile"
        )
        # only what the master acknowledged about a replication delay before it died (or
        # whose reply was on its way at the kill) is gone
        assert all(-0.1 < t < 0.1 for t in lost), lost

        async def before_done() -> bool:
            got = await statuses(app, before)
            return all(s in (None, b"succeeded") for s in got)

        await eventually(before_done, 30, "every surviving job to succeed")
        # the blocking producer asks the sentinels too
        sync_job = await asyncio.to_thread(app.enqueue_sync, "work", 7, 1)
        assert await asyncio.to_thread(sync_job.result, 10) == 7
        assert worker.alive, "the worker had to be restarted"
        info = await app.job(after[-1]).info()
        assert info.status is JobStatus.SUCCEEDED
        assert f":{worker.pid}:" in (info.worker or "")
    finally:
        stop.set()
        spawned.close()
        await app.aclose()


async def test_durable_enqueues_survive_a_failover_that_loses_plain_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replication stalls (the replica's link to the master goes through a proxy that holds
    the bytes), then the master dies: plain enqueues the master acknowledged meanwhile are
    gone after the failover; a ``durable=True`` enqueue never returned during the stall (it
    waits for a replica), so nothing it acknowledged is lost: its job is there."""
    monkeypatch.setattr(enqueue_scripts, "DURABLE_TIMEOUT", 1.0)
    s = LocalSentinel(down_after_ms=1000)
    proxy = await FaultProxy(s.master).start()
    app = App(unique_name(), redis_url=s.url)

    @app.task
    async def noop(i: int) -> int:
        return i

    try:
        await asyncio.to_thread(s.start, proxy.port)
        fast = await noop.options(durable=True).enqueue(0)  # replication flows: returns
        assert await app.redis.hget(app.keys().job(fast.id), "status") == b"queued"
        proxy.stall()
        plain = [await noop.enqueue(i) for i in range(20)]  # acknowledged by the master alone
        with pytest.raises(NotDurable, match="0 replica"):
            await noop.options(durable=True).enqueue(-1)
        durable = asyncio.create_task(noop.options(durable=True, job_id="d1").enqueue(-2))
        await asyncio.sleep(0.3)
        assert not durable.done(), "a durable enqueue returned before any replica had it"
        s.kill_master()
        proxy.reset_all()  # the bytes the master sent but the replica never got are gone
        await asyncio.to_thread(s.failed_over)
        got = await statuses(app, [j.id for j in plain])
        assert got == [None] * len(plain), "the plain jobs were not lost: the test proves nothing"
        assert await app.redis.hget(app.keys().job(fast.id), "status") == b"queued"
        # the durable enqueue, resent to the new master (idempotent), cannot be confirmed
        # there (it has no replica yet): it says so rather than claim durability
        with pytest.raises((NotDurable, RedisUnavailable)):
            await durable
        async with Worker(app, burst=True) as w:
            await w.run()
        assert (await fast.info()).status is JobStatus.SUCCEEDED
    finally:
        s.stop()
        await proxy.aclose()
        await app.aclose()


async def test_durable_without_a_replica_raises_not_durable(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a Redis with no replica a durable enqueue writes the job and raises NotDurable
    naming it; enqueueing it again with the same id is safe."""
    monkeypatch.setattr(enqueue_scripts, "DURABLE_TIMEOUT", 0.1)
    app = App(unique_name(), redis_url=redis_url)

    @app.task
    async def noop() -> None: ...

    try:
        with pytest.raises(NotDurable, match="order-7") as info:
            await noop.options(durable=True, job_id="order-7").enqueue()
        assert info.value.job_ids == ["order-7"]
        assert await app.job("order-7").status() is JobStatus.QUEUED
        with pytest.raises(TypeError, match="durable must be True or False"):
            noop.options(durable=1)  # type: ignore[arg-type]
    finally:
        await app.aclose()
