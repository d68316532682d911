"""Network faults between aioq and Redis, injected by a TCP proxy on loopback
(``tests/netfault.py``): added latency, stalled connections, replies reset mid-way, a worker
partitioned for longer than its lease, and a stalled Redis (CLIENT PAUSE).

Redis is a real redis-server on a TCP loopback port; whoever is under test connects through
``redis://127.0.0.1:<proxy port>``, everyone else (the test's own checks, a second worker that
takes over) directly. Worker subprocesses run ``tests/apps/soak.py``, whose tasks record every
run in Redis, so the test counts executions independently of aioq's bookkeeping.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from aioq import App, JobCancelled, JobStatus, RedisUnavailable
from aioq.embedded import EmbeddedRedis
from aioq.keys import GROUP
from aioq.scripts import COMPLETE, ENQUEUE, FETCH, RECLAIM, RENEW, START_NEW
from tests.apps.soak import runs_per_job
from tests.conftest import unique_name
from tests.helpers import Spawned, WorkerProcess, eventually, processes_parked
from tests.netfault import FaultProxy

pytestmark = pytest.mark.anyio

TARGET = "tests.apps.soak:app"


def _sha(source: str) -> bytes:
    import hashlib

    return hashlib.sha1(source.encode()).hexdigest().encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def tcp_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server on a TCP loopback port (the proxy forwards to it)."""
    with EmbeddedRedis(port=free_port()) as server:
        yield server


def direct_url(server: EmbeddedRedis) -> str:
    return f"redis://127.0.0.1:{server.port}/0"


@pytest.fixture
async def proxy(tcp_redis: EmbeddedRedis) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(tcp_redis.port) as p:
        yield p


@pytest.fixture
def name() -> str:
    return unique_name("net")


@pytest.fixture
async def direct(tcp_redis: EmbeddedRedis, name: str) -> AsyncIterator[App]:
    """The app, connected straight to Redis: the test's view of the truth."""
    a = App(name, redis_url=direct_url(tcp_redis))
    yield a
    await a.aclose()


@pytest.fixture
async def proxied(proxy: FaultProxy, name: str) -> AsyncIterator[App]:
    """The app, connected through the proxy: a producer and result waiter under faults."""
    a = App(name, redis_url=proxy.url)
    yield a
    await a.aclose()


@pytest.fixture
def workers(name: str) -> Iterator[Any]:
    """``workers(url, vt, *cli_args)`` starts ``aioq worker`` on the test's app; every one is
    killed at teardown and its output printed (shown when the test fails)."""
    spawned = Spawned()

    def spawn(url: str, vt: float, *args: str) -> WorkerProcess:
        env = {"AIOQ_SOAK_APP": name, "AIOQ_SOAK_VT": str(vt)}
        return spawned.start(TARGET, url, env, *args)

    yield spawn
    spawned.close()


async def ready(app: App, w: WorkerProcess, timeout: float = 20) -> None:
    """Wait until worker ``w`` has run a job (it is up, connected and fetching)."""
    job = await app.enqueue("noop", -1)
    await eventually(lambda: _finished(app, job.id, w), timeout, f"worker {w.pid} ran a first job")


async def _finished(app: App, job_id: str, w: WorkerProcess) -> bool:
    if not w.alive:
        raise AssertionError(f"worker {w.pid} exited early:\n{w.output}")
    return (await app.job(job_id).status()).finished


async def running_on(app: App, job_id: str, w: WorkerProcess) -> bool:
    info = await app.job(job_id).info()
    return info.status is JobStatus.RUNNING and f":{w.pid}:" in (info.worker or "")


async def stream_entries(app: App) -> list[str]:
    """The job id of every entry left in the app's default queue (all priorities)."""
    out: list[str] = []
    for level in app.keys().levels:
        for _, fields in await app.redis.xrange(level.stream):
            out.append(fields[b"id"].decode())
    return out


async def assert_drained(app: App) -> None:
    for level in app.keys().levels:
        assert await app.redis.xlen(level.stream) == 0, level.stream
        if await app.redis.exists(level.stream):
            assert int((await app.redis.xpending(level.stream, GROUP))["pending"]) == 0


async def job_records(app: App) -> list[str]:
    prefix = app.keys().job("")
    return [k.decode()[len(prefix) :] async for k in app.redis.scan_iter(f"{prefix}*", 1000)]


async def all_succeeded(app: App, ids: list[str]) -> bool:
    async with app.redis.pipeline(transaction=False) as pipe:
        for jid in ids:
            pipe.hget(app.keys().job(jid), "status")
        raw = await pipe.execute()
    return all(s == b"succeeded" for s in raw)


# -- latency ----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_added_latency_slows_but_loses_and_duplicates_nothing(
    proxy: FaultProxy, proxied: App, direct: App, workers: Any
) -> None:
    """20 ms each way on every command of the worker and the producer: all jobs run once."""
    w = workers(proxy.url, 2.0, "--concurrency", "20")
    await ready(direct, w)
    proxy.latency = 0.02
    jobs = [await proxied.enqueue("nap", i, 5 * (i % 7)) for i in range(60)]
    jobs += await proxied.enqueue_many([proxied.options("noop").call(i) for i in range(60, 200)])
    results = await asyncio.wait_for(
        asyncio.gather(*(j.result(timeout=60) for j in jobs)), timeout=60
    )
    assert results == list(range(200))
    runs = await runs_per_job(direct.redis, direct.name)
    assert [runs[j.id] for j in jobs] == [1] * 200
    await assert_drained(direct)
    assert w.alive


# -- a stalled connection -----------------------------------------------------------------------


@pytest.mark.slow
async def test_stall_shorter_than_the_lease_only_delays(
    proxy: FaultProxy, proxied: App, direct: App, workers: Any
) -> None:
    """Every byte held for 1 s (< the 3 s lease) mid-run: each job still runs exactly once, and
    result() waiters across the stall get their results."""
    w = workers(proxy.url, 3.0, "--concurrency", "20")
    await ready(direct, w)
    jobs = await proxied.enqueue_many([proxied.options("nap").call(i, 300) for i in range(40)])
    waiters = [asyncio.ensure_future(j.result(timeout=30)) for j in jobs]
    await eventually(lambda: running_on(direct, jobs[0].id, w), 10, "first job running")
    proxy.stall()
    await asyncio.sleep(1.0)
    assert not any(f.done() for f in waiters), "a result arrived through a stalled proxy"
    proxy.flow()
    assert await asyncio.gather(*waiters) == list(range(40))
    runs = await runs_per_job(direct.redis, direct.name)
    assert [runs[j.id] for j in jobs] == [1] * 40
    assert "took over" not in w.output
    await assert_drained(direct)


@pytest.mark.slow
async def test_worker_drops_connections_that_stop_flowing(
    proxy: FaultProxy, direct: App, workers: Any
) -> None:
    """Black-hole the worker's open connections for good (new ones flow): each command on them
    times out (redis-py's 5 s socket timeout), the worker reconnects and carries on, and its
    running job runs to its end."""
    vt = 2.0
    w = workers(proxy.url, vt, "--concurrency", "5")
    await ready(direct, w)
    job = await direct.enqueue("nap", 1, 3000)
    await eventually(lambda: running_on(direct, job.id, w), 10, "job running")
    proxy.stall(existing_only=True)  # never flow again; connections opened from now on work
    after = await direct.enqueue_many([direct.options("noop").call(i) for i in range(10)])
    await eventually(
        lambda: all_succeeded(direct, [job.id] + [j.id for j in after]),
        30,
        "jobs finished by a worker whose connections were black-holed",
        interval=0.1,
    )
    runs = await runs_per_job(direct.redis, direct.name)
    # the running job may have been taken over by this same worker once its lease lapsed
    # while its renewals hung; the new jobs ran once
    assert [runs[j.id] for j in after] == [1] * 10
    assert runs[job.id] in (1, 2)
    assert w.alive
    await assert_drained(direct)


@pytest.mark.slow
async def test_result_waiter_outlives_a_black_holed_subscription(
    proxy: FaultProxy, proxied: App, direct: App, workers: Any, tcp_redis: EmbeddedRedis
) -> None:
    """A result() waiter whose shared subscription is black-holed still gets the result."""
    w = workers(direct_url(tcp_redis), 3.0)
    await ready(direct, w)
    job = await proxied.enqueue("nap", 7, 1500)
    waiter = asyncio.ensure_future(job.result())
    await eventually(lambda: running_on(direct, job.id, w), 10, "job running")
    await asyncio.sleep(0.2)  # the waiter has subscribed
    proxy.stall(existing_only=True)
    try:
        assert await asyncio.wait_for(waiter, 20) == 7
    finally:
        waiter.cancel()


@pytest.mark.slow
async def test_cancel_reaches_a_worker_whose_subscription_was_black_holed(
    proxy: FaultProxy, direct: App, workers: Any
) -> None:
    """Every open connection of the worker is black-holed: a job started afterwards on a new
    connection is still stopped by cancel() long before its end."""
    w = workers(proxy.url, 3.0, "--concurrency", "5")
    await ready(direct, w)
    proxy.stall(existing_only=True)
    job = await direct.enqueue("nap", 1, 60_000)
    await eventually(lambda: running_on(direct, job.id, w), 20, "job running")
    assert await job.cancel()
    with pytest.raises(JobCancelled):
        await job.result(timeout=20)
    assert w.alive


# -- a reply reset mid-way ----------------------------------------------------------------------


async def test_enqueue_whose_reply_is_cut_is_written_once(
    proxy: FaultProxy, proxied: App, direct: App
) -> None:
    """ENQUEUE runs in Redis, its reply is cut mid-way and the connection reset: the resent
    call finds the job written and writes nothing, so each job has one record and one entry."""
    sha = _sha(ENQUEUE)
    jobs = []
    for i in range(20):
        proxy.cut_reply(sha)
        jobs.append(await proxied.enqueue("noop", i))
        assert not proxy.cut_pending
    for i in range(5):  # several EVALSHAs in one write (chunks of 200 jobs), cut part-way
        proxy.cut_reply(sha)
        jobs += await proxied.enqueue_many(
            [proxied.options("noop").call(1000 * i + k) for k in range(450)]
        )
        assert not proxy.cut_pending
    assert proxy.cuts == 25
    ids = [j.id for j in jobs]
    entries = await stream_entries(direct)
    assert len(entries) == len(set(entries)) == len(ids)
    assert set(entries) == set(ids) == set(await job_records(direct))


@pytest.mark.slow
@pytest.mark.parametrize(
    "script", ["FETCH", "START_NEW", "COMPLETE", "RENEW", "RECLAIM"], ids=str.lower
)
async def test_worker_script_whose_reply_is_cut_runs_every_job_once(
    script: str, proxy: FaultProxy, direct: App, workers: Any
) -> None:
    """A worker script's reply is cut mid-way (the script ran in Redis) and the connection
    reset: the worker carries on, and every job runs exactly once and finishes."""
    source = {"FETCH": FETCH, "START_NEW": START_NEW, "COMPLETE": COMPLETE, "RENEW": RENEW,
              "RECLAIM": RECLAIM}[script]  # fmt: skip
    vt = 1.5
    w = workers(proxy.url, vt, "--concurrency", "10")
    await ready(direct, w)
    proxy.cut_reply(_sha(source))
    jobs = await direct.enqueue_many([direct.options("nap").call(i, 600) for i in range(30)])
    deadline = time.monotonic() + 10
    while proxy.cut_pending and time.monotonic() < deadline:
        if len(jobs) < 200:  # keep work coming until the script under test has been cut
            jobs.append(await direct.enqueue("nap", len(jobs), 600))
        await asyncio.sleep(0.1)
    assert not proxy.cut_pending, f"{script} was never called"
    ids = [j.id for j in jobs]
    await eventually(lambda: all_succeeded(direct, ids), 30, "every job finished", interval=0.1)
    runs = await runs_per_job(direct.redis, direct.name)
    assert {runs[j] for j in ids} == {1}, "a job ran twice (or never)"
    assert [await j.result(timeout=1) for j in jobs] == list(range(len(jobs)))
    assert w.alive
    await assert_drained(direct)


# -- resets under a producer ----------------------------------------------------------------------


async def test_enqueue_under_connection_resets_succeeds_once_or_raises(
    proxy: FaultProxy, proxied: App, direct: App
) -> None:
    """Every connection reset every 20 ms while producers enqueue: each enqueue returns or
    raises RedisUnavailable, and there is never a second record or stream entry of a job."""

    async def chaos() -> None:
        while True:
            await asyncio.sleep(0.02)
            proxy.reset_all()

    async def produce(k: int) -> tuple[list[str], list[str]]:
        ok, raised = [], []
        for i in range(60):
            jid = f"p{k}-{i}"
            try:
                if i % 10 == 9:
                    named = [proxied.options("noop", job_id=f"{jid}-{n}") for n in range(50)]
                    batch = [o.call(n) for n, o in enumerate(named)]
                    ok += [j.id for j in await proxied.enqueue_many(batch)]
                else:
                    ok.append((await proxied.options("noop", job_id=jid).enqueue(i)).id)
            except RedisUnavailable:
                raised.append(jid)
        return ok, raised

    resetter = asyncio.ensure_future(chaos())
    try:
        outcomes = await asyncio.gather(*(produce(k) for k in range(4)))
    finally:
        resetter.cancel()
    ok = [j for o, _ in outcomes for j in o]
    raised = [j for _, r in outcomes for j in r]
    assert proxy.accepted > 10, "the resets did not land"
    entries = await stream_entries(direct)
    records = await job_records(direct)
    assert len(entries) == len(set(entries)), "a job has two stream entries"
    assert set(entries) == set(records)
    assert set(ok) <= set(records)
    print(f"{len(ok)} enqueued, {len(raised)} raised, {proxy.accepted} connections")


# -- a worker partitioned for longer than its lease ------------------------------------------------


async def parked(app: App, w: WorkerProcess, timeout: float = 20) -> None:
    """Wait until worker ``w`` is parked in a blocking XREADGROUP: ready, and idle."""
    await processes_parked(app, w, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stall", "drop"])
async def test_partitioned_worker_hands_over_and_carries_on(
    how: str, proxy: FaultProxy, direct: App, workers: Any, tcp_redis: EmbeddedRedis
) -> None:
    """Worker A (through the proxy) is cut off for 3x its lease while running a job, its
    connections stalled (bytes held, sockets open) or dropped (reset, new ones refused).
    Worker B (direct) takes the job over and its result stands; once the network heals A
    writes nothing over it, stops its copy, and runs new jobs again."""
    vt = 1.5
    a = workers(proxy.url, vt, "--concurrency", "5")
    await ready(direct, a)
    job = await direct.enqueue("nap", 42, 6000)
    waiter = asyncio.ensure_future(job.result(timeout=30))
    await eventually(lambda: running_on(direct, job.id, a), 10, "job running on A")
    b = workers(direct_url(tcp_redis), vt, "--concurrency", "5")
    await parked(direct, b)

    if how == "stall":
        proxy.stall()
    else:
        proxy.refuse = True
        proxy.reset_all()
    try:
        await eventually(lambda: running_on(direct, job.id, b), 3 * vt, "B took the job over")
        await asyncio.sleep(max(0.0, 3 * vt - vt))
    finally:
        proxy.refuse = False
        proxy.flow()
    assert await waiter == 42
    info = await job.info()
    assert f":{b.pid}:" in (info.worker or "")
    assert info.attempts == 2

    # A carries on: with B gone, A runs what comes next
    b.signal(signal.SIGTERM)
    assert await b.exited(15) == 0
    after = await direct.enqueue_many([direct.options("noop").call(i) for i in range(5)])
    assert [await j.result(timeout=20) for j in after] == list(range(5))
    for j in after:
        assert f":{a.pid}:" in ((await j.info()).worker or "")
    final = await job.info()
    assert (final.status, final.worker, final.finished_at) == (
        JobStatus.SUCCEEDED, info.worker, info.finished_at,
    )  # fmt: skip
    runs = await runs_per_job(direct.redis, direct.name)
    assert runs[job.id] == 2  # A's copy (in flight at the partition) and B's
    assert a.alive
    await assert_drained(direct)


# -- a stalled Redis: CLIENT PAUSE ------------------------------------------------------------


@pytest.mark.slow
async def test_client_pause_longer_than_the_client_timeout_loses_and_duplicates_nothing(
    proxied: App, direct: App, workers: Any, proxy: FaultProxy, tcp_redis: EmbeddedRedis
) -> None:
    """CLIENT PAUSE for 6 s (longer than redis-py's 5 s socket timeout, shorter than the
    12 s lease) while a worker runs jobs and producers enqueue and wait: commands time out and
    are retried, every enqueue lands once, every job runs once, every waiter gets its result."""
    vt = 12.0
    w = workers(proxy.url, vt, "--concurrency", "20")
    await ready(direct, w)
    admin = Redis.from_url(direct_url(tcp_redis))
    try:
        first = await proxied.enqueue_many(
            [proxied.options("nap").call(i, 20 * (i % 50)) for i in range(200)]
        )
        waiters = [asyncio.ensure_future(j.result(timeout=60)) for j in first]
        await asyncio.sleep(0.3)
        await admin.execute_command("CLIENT", "PAUSE", 6000, "ALL")
        paused = time.monotonic()

        async def produce(k: int) -> list[str]:
            ids = []
            for i in range(15):
                try:
                    job = await proxied.enqueue("noop", 1000 * (k + 1) + i)
                    ids.append(job.id)
                    waiters.append(asyncio.ensure_future(job.result(timeout=60)))
                except RedisUnavailable:
                    pass
                await asyncio.sleep(0.4)
            return ids

        produced = await asyncio.gather(*(produce(k) for k in range(3)))
        assert time.monotonic() - paused > 6
        results = await asyncio.wait_for(asyncio.gather(*waiters), 60)
    finally:
        await admin.aclose()
    ids = [j.id for j in first] + [i for p in produced for i in p]
    assert results[:200] == list(range(200))
    assert len(ids) > 200
    records = set(await job_records(direct))
    assert set(ids) <= records
    assert await all_succeeded(direct, sorted(records))
    runs = await runs_per_job(direct.redis, direct.name)
    assert {runs[j] for j in records} == {1}, "a job ran twice (or never)"
    assert "took over" not in w.output
    assert w.alive
    await assert_drained(direct)
