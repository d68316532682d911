"""aioq on a local Redis Cluster of 3 masters (``tests/ha.py``): queues spread over the nodes,
the core, scheduling and fault essentials, the CLI and the dashboard, and a slot migration of
a busy queue (``redis-cli --cluster reshard``) that loses no job."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from redis import Redis
from redis.crc import key_slot

from aioq import App, JobCancelled, JobStatus, TaskFailed, Worker, chord, current_job, group
from aioq.cluster import ClusterLane
from aioq.dashboard import dashboard
from aioq.scripts import WorkerArgs
from tests.apps.faulty import side_key

from .conftest import unique_name
from .ha import LocalCluster
from .helpers import ROOT, Spawned, eventually

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(masters=3) as c:
        yield c


@pytest.fixture
async def capp(cluster: LocalCluster) -> AsyncIterator[App]:
    app = App(unique_name(), redis_url=cluster.url, visibility_timeout=5.0)
    yield app
    await app.aclose()


def on_nodes(cluster: LocalCluster, app: App, queues: list[str]) -> list[int]:
    """The port of the master holding each queue, checked against where its stream is."""
    ports = [cluster.owner(app.keys(q).tag) for q in queues]
    for q, port in zip(queues, ports, strict=True):
        for p in cluster.ports:
            with Redis(port=p) as r:
                here = r.execute_command(
                    "CLUSTER", "COUNTKEYSINSLOT", key_slot(app.keys(q).stream.encode())
                )
                assert (here > 0) == (p == port), f"queue {q}'s keys are not (only) on {port}"
    return ports


async def test_queues_spread_over_the_nodes_and_one_worker_reads_them_all(
    cluster: LocalCluster, capp: App
) -> None:
    """Three queues on three masters: one worker serves them all, every result comes back
    (pushed, not polled), and each queue's keys live on its own node only."""
    qs = cluster.queues_on_each_node(capp.name)
    tasks = []
    for i, q in enumerate(qs):

        @capp.task(name=f"mul{i}", queue=q)
        async def mul(x: int, k: int = i + 1) -> int:
            return x * k

        tasks.append(mul)
    jobs = await capp.enqueue_many([t.call(x) for t in tasks for x in range(100)])
    t0 = time.monotonic()
    async with Worker(capp, concurrency=50):
        results = await asyncio.gather(*(j.result(timeout=20) for j in jobs))
    assert results == [x * (i + 1) for i in range(3) for x in range(100)]
    assert time.monotonic() - t0 < 10
    assert sorted(on_nodes(cluster, capp, qs)) == sorted(cluster.ports)
    assert (await jobs[0].info()).status is JobStatus.SUCCEEDED
    # a waiter on a job of another node than its first: the shared subscription still hears it
    late = await tasks[2].enqueue(7)
    async with Worker(capp, queues=[qs[2]]):
        assert await late.result(timeout=10) == 21


async def test_retries_failures_and_cancel_on_a_cluster(cluster: LocalCluster, capp: App) -> None:
    """Retries with backoff, a final failure and a cancelled running job, on other nodes."""
    qs = cluster.queues_on_each_node(capp.name)
    started = asyncio.Event()

    @capp.task(queue=qs[0], retries=2, backoff=0.05)
    async def flaky() -> int:
        if current_job().attempt < 3:
            raise ConnectionError("not yet")
        return current_job().attempt

    @capp.task(queue=qs[1])
    async def broken() -> None:
        raise ValueError("always")

    @capp.task(queue=qs[2])
    async def slow() -> None:
        started.set()
        await asyncio.sleep(30)

    async with Worker(capp, concurrency=10):
        ok, bad, long = await flaky.enqueue(), await broken.enqueue(), await slow.enqueue()
        assert await ok.result(timeout=10) == 3
        with pytest.raises(TaskFailed, match="always"):
            await bad.result(timeout=10)
        await asyncio.wait_for(started.wait(), 10)
        assert await long.cancel()
        with pytest.raises(JobCancelled):
            await long.result(timeout=10)
    assert (await ok.info()).attempts == 3
    assert (await long.info()).status is JobStatus.CANCELLED


async def test_enqueue_sync_on_a_cluster(cluster: LocalCluster, capp: App) -> None:
    """The blocking producer (``enqueue_sync``, ``SyncJob.result``) routes by slot too."""
    qs = cluster.queues_on_each_node(capp.name)

    @capp.task(queue=qs[1])
    async def add(x: int, y: int) -> int:
        return x + y

    def produce() -> list[int]:
        jobs = [add.enqueue_sync(i, 1) for i in range(5)]
        return [j.result(timeout=10) for j in jobs]

    async with Worker(capp):
        assert await asyncio.to_thread(produce) == [1, 2, 3, 4, 5]


async def test_cron_once_per_tick_and_rate_limit_on_a_cluster(
    cluster: LocalCluster, capp: App
) -> None:
    """Two workers fire each tick of a cron once; a "5/s" task on another node keeps its
    limit across both."""
    qs = cluster.queues_on_each_node(capp.name)
    ticks: list[str] = []

    @capp.cron(every=0.2, queue=qs[0])
    async def beat() -> None:
        ticks.append(current_job().id)

    @capp.task(queue=qs[1], rate_limit="5/s")
    async def call_api(i: int) -> int:
        return i

    jobs = await capp.enqueue_many([call_api.call(i) for i in range(12)])
    t0 = time.monotonic()
    async with Worker(capp, concurrency=20), Worker(capp, concurrency=20):
        assert [await j.result(timeout=10) for j in jobs] == list(range(12))
        elapsed = time.monotonic() - t0
    assert elapsed >= 1.9  # 12 starts at 5/s need two full windows
    infos = [await j.info() for j in jobs]
    starts = sorted(i.started_at.timestamp() for i in infos if i.started_at)
    for k, first in enumerate(starts):
        assert sum(1 for s in starts[k:] if s < first + 1.0) <= 5
    assert len(ticks) == len(set(ticks))
    stamps = sorted(int(t.rsplit(":", 1)[1]) for t in ticks)
    assert len(stamps) >= 5
    assert all(b - a == 200 for a, b in itertools.pairwise(stamps))


async def test_a_chord_across_queues_on_different_nodes(cluster: LocalCluster, capp: App) -> None:
    """A chord whose members run on two nodes and whose callback runs on the third."""
    qs = cluster.queues_on_each_node(capp.name)

    @capp.task(queue=qs[0])
    async def square(x: int) -> int:
        return x * x

    @capp.task(queue=qs[1])
    async def cube(x: int) -> int:
        return x**3

    @capp.task(queue=qs[2])
    async def total(values: list[int]) -> int:
        return sum(values)

    async with Worker(capp, concurrency=20):
        job = await chord(
            [*(square.s(i) for i in range(5)), *(cube.s(i) for i in range(5))], total.s()
        ).enqueue()
        assert await job.result(timeout=20) == sum(i * i for i in range(5)) + sum(
            i**3 for i in range(5)
        )
        g = await group(square.s(3), cube.s(2)).enqueue()
        assert await g.results(timeout=10) == [9, 8]


async def test_flow_control_on_a_cluster(cluster: LocalCluster) -> None:
    """Dedup, debounce, a full queue waited on, routes and a broadcast, with queues on
    different masters: every script stays in its queue's slot."""
    name = unique_name()
    queues = cluster.queues_on_each_node(name)
    app = App(
        name, redis_url=cluster.url, visibility_timeout=5.0, queue_limits={queues[1]: 1},
        routes={"routed.*": queues[2]},
    )  # fmt: skip

    @app.task(queue=queues[0])
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task(queue=queues[1])
    async def slow(x: int) -> int:
        await asyncio.sleep(0.2)
        return x

    @app.task(name="routed.echo")
    async def echo(x: int) -> int:
        return x

    @app.task(broadcast=True, queue=queues[2])
    async def ping() -> str:
        return "pong"

    try:
        assert len({cluster.owner(app.keys(q).tag) for q in queues}) == 3
        first = await add.options(unique_for=5).enqueue(1, 2)
        assert (await add.options(unique_for=5).enqueue(1, 2)).id == first.id
        bounced = await add.options(debounce=0.2, unique_key="k").enqueue(1, 1)
        assert (await add.options(debounce=0.2, unique_key="k").enqueue(2, 2)).id == bounced.id
        blocker = await slow.enqueue(1)
        routed = await echo.enqueue(7)
        assert routed.queue == queues[2]
        async with Worker(app, concurrency=4) as w1, Worker(app, concurrency=4) as w2:
            waited = await slow.options(wait_if_full=10).enqueue(2)  # room once 1 finishes
            assert await blocker.result(timeout=10) == 1
            assert await waited.result(timeout=10) == 2
            assert await first.result(timeout=10) == 3
            assert await bounced.result(timeout=10) == 4
            assert await routed.result(timeout=10) == 7
            await eventually(lambda: _workers_beat(app, 2), 10, "both workers beating")
            job = await ping.enqueue()
            assert await job.result(timeout=10) == {w1.consumer: "pong", w2.consumer: "pong"}
    finally:
        await app.aclose()


async def _workers_beat(app: App, n: int) -> bool:
    from aioq.views import worker_stats

    return len(await worker_stats(app)) >= n


async def test_sigkill_reclaim_on_a_cluster(cluster: LocalCluster) -> None:
    """A worker process SIGKILLed amid jobs on a cluster loses none: another takes over its
    lapsed leases; only what it held runs twice."""
    app = App(unique_name(), redis_url=cluster.url, visibility_timeout=1.5)
    spawned = Spawned()
    env = {"AIOQ_TEST_APP": app.name, "AIOQ_TEST_VT": "1.5", "AIOQ_TEST_MAX_DELIVERIES": "5"}
    starts, ends = side_key(app.name, "starts"), side_key(app.name, "ends")
    try:
        n = 300
        jobs = await app.enqueue_many([app.options("work").call(i, 20) for i in range(n)])
        first = spawned.start("tests.apps.faulty:app", cluster.url, env, "--concurrency", "20")

        async def some_done() -> bool:
            if not first.alive:
                raise AssertionError(first.output)
            return await app.redis.hlen(ends) >= 60

        await eventually(some_done, 30, "60 jobs finished by the first worker")
        first.signal(signal.SIGKILL)
        assert await first.exited(5) == -signal.SIGKILL
        spawned.start("tests.apps.faulty:app", cluster.url, env, "--concurrency", "20")

        async def all_ended() -> bool:
            return await app.redis.hlen(ends) == n

        await eventually(all_ended, 40, "every job ran to its end")
        started = [int(v) for v in (await app.redis.hgetall(starts)).values()]
        assert max(started) <= 2
        infos = [await j.info() for j in jobs]
        assert {i.status for i in infos} == {JobStatus.SUCCEEDED}
        # taken over from the dead worker: what it held (its 20 slots), no more
        assert 0 < sum(i.attempts == 2 for i in infos) <= 20
        assert max(i.attempts for i in infos) == 2
    finally:
        spawned.close()
        await app.redis.delete(starts, ends)
        await app.aclose()


def aioq_cli(url: str, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIOQ_REDIS_URL": url, "AIOQ_APP_NAME": name}
    return subprocess.run(
        [sys.executable, "-m", "aioq", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def test_cli_and_dashboard_on_a_cluster(cluster: LocalCluster) -> None:
    """``aioq enqueue``, ``info``, ``jobs`` (the index and the scan of job records), ``worker
    --burst`` and the dashboard's API, against a cluster URL."""
    name = unique_name()
    target = "tests.apps.basic:app"
    ids = []
    for task, arg in (("add", "[1, 2]"), ("send", '["x"]')):
        r = aioq_cli(cluster.url, name, "enqueue", target, task, "--args", arg)
        assert r.returncode == 0, r.stderr
        ids.append(r.stdout.strip())
    r = aioq_cli(cluster.url, name, "info", target, "--json")
    assert r.returncode == 0, r.stderr
    queues = {q["queue"]: q for q in json.loads(r.stdout)["queues"]}
    assert queues["default"]["queued"] == 1
    assert queues["emails"]["queued"] == 1
    r = aioq_cli(cluster.url, name, "worker", target, "--burst")
    assert r.returncode == 0, r.stderr
    r = aioq_cli(cluster.url, name, "jobs", target, "--status", "succeeded", "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(j["id"] for j in json.loads(r.stdout)) == sorted(ids)

    app = App(name, redis_url=cluster.url)

    @app.task(queue="emails")
    async def send(to: str) -> str:
        return to

    try:
        transport = httpx.ASGITransport(app=dashboard(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            overview = (await client.get("/api/overview")).json()
            assert {q["queue"] for q in overview["queues"]} == {"default", "emails"}
            assert sorted(j["id"] for j in overview["recent"]) == sorted(ids)
            assert (await client.get("/api/jobs")).json()["jobs"] == []
    finally:
        await app.aclose()


async def test_slot_migration_of_a_busy_queue_loses_no_job(cluster: LocalCluster) -> None:
    """``redis-cli --cluster reshard`` moves a queue's slot to another master while a producer
    enqueues and two workers drain it: every acknowledged job runs, exactly once, and the
    queue goes on from its new node."""
    app = App(unique_name(), redis_url=cluster.url, visibility_timeout=10.0)
    firsts = {start for start, _, _ in cluster.slot_table(cluster.ports[0])}
    queue = next(
        f"m{i}" for i in itertools.count() if key_slot(f"{{{app.name}:m{i}}}".encode()) in firsts
    )
    slot = key_slot(app.keys(queue).stream.encode())
    source = cluster.owner_of_slot(slot)
    target = next(p for p in cluster.ports if p != source)
    runs = side_key(app.name, "runs")

    @app.task(queue=queue)
    async def work(i: int) -> int:
        await app.redis.hincrby(runs, current_job().id, 1)
        await asyncio.sleep(0.005)
        return i

    acked: list[str] = []
    stop = asyncio.Event()

    async def produce() -> None:
        i = 0
        while not stop.is_set():
            jobs = await app.enqueue_many([work.call(i + k) for k in range(20)])
            acked.extend(j.id for j in jobs)
            i += 20
            await asyncio.sleep(0.005)

    try:
        # a backlog and finished records, so the slot holds thousands of keys to move
        backlog = await app.enqueue_many([work.call(-k) for k in range(3000)])
        acked.extend(j.id for j in backlog)
        async with Worker(app, concurrency=50), Worker(app, concurrency=50):
            producer = asyncio.create_task(produce())
            await asyncio.sleep(0.5)
            t0 = time.monotonic()
            await asyncio.to_thread(cluster.reshard, slot, target, 5)
            moved_in = time.monotonic() - t0
            await asyncio.sleep(0.5)  # the producer and the workers go on on the new node
            stop.set()
            await producer

            async def drained() -> bool:
                return await app.redis.hlen(runs) >= len(acked)

            await eventually(drained, 60, "every acknowledged job to run")
        raw: dict[bytes, bytes] = await app.redis.hgetall(runs)  # type: ignore[assignment]
        counts = {k.decode(): int(v) for k, v in raw.items()}
        assert set(counts) == set(acked), "a job acknowledged to the producer never ran"
        assert max(counts.values()) == 1, "a job ran twice"
        assert cluster.owner_of_slot(slot) == target
        with Redis(port=target) as r:
            assert r.exists(app.keys(queue).stream)
        lane = app._connection().lane
        assert isinstance(lane, ClusterLane)
        print(f"moved slot {slot} ({len(acked)} jobs) in {moved_in:.2f}s: {lane.redirects}")
        # the traffic met the migration: held off while the slot moved, then sent on
        assert lane.redirects["TRYAGAIN"] + lane.redirects["ASK"] > 0
        assert lane.redirects["MOVED"] > 0
    finally:
        await app.redis.delete(runs)
        await app.aclose()


async def test_no_script_runs_on_half_a_migrating_queue(cluster: LocalCluster) -> None:
    """While a queue's slot migrates, with every key the scripts declare present on the source
    and a job's record already moved, a fetch is held off (TRYAGAIN: the undeclared guard key
    is missing on both nodes) instead of running against half of the queue; once the slot has
    moved it runs on the new node and starts the job, which is then neither lost nor
    dead-lettered."""
    app = App(unique_name(), redis_url=cluster.url)
    keys = app.keys()
    slot = key_slot(keys.stream.encode())
    target = next(p for p in cluster.ports if p != cluster.owner_of_slot(slot))
    worker = WorkerArgs("c1", 5, 3600, 1000)
    try:
        await app.scripts.prepare([keys], {keys: {"t": "5 1000"}})
        job = await app.enqueue("t")
        # every declared key exists: the script would be allowed to run on the source
        await app.enqueue_many([app.options("t", delay=3600).call()])
        await app.redis.xadd(keys.dead, {"reason": "test"})
        await app.redis.zadd(keys.failed, {"x": 1})
        await app.redis.xadd(keys.recent, {"ids": "[]"})
        await app.redis.zadd(keys.flows, {"x": 1})
        await app.redis.zadd(keys.keyed, {"x": 1})
        await app.redis.hset(keys.keylimits, "", "1")
        present = [await app.redis.exists(k) for k in keys.declared]
        assert present == [1] * (len(keys.declared) - 1) + [0]  # all but the guard
        source = cluster.begin_migration(slot, target)
        assert cluster.migrate(slot, target, [keys.job(job.id)]) == 1
        fetch = asyncio.create_task(app.scripts.fetch(keys, worker, 10, 0))
        await asyncio.sleep(0.5)
        assert not fetch.done(), "a script ran while its queue was on two nodes"
        cluster.migrate(slot, target)
        cluster.finish_migration(slot, target)
        rows = await asyncio.wait_for(fetch, 10)
        assert [r[1].decode() for r in rows] == [job.id]
        assert (await job.info()).status is JobStatus.RUNNING
        assert await app.redis.xlen(keys.dead) == 1  # only the test's own entry
        lane = app._connection().lane
        assert isinstance(lane, ClusterLane)
        assert lane.redirects["TRYAGAIN"] > 0
        assert lane.redirects["MOVED"] > 0
        assert source != target
    finally:
        await app.aclose()
