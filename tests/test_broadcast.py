"""Broadcast tasks (``@app.task(broadcast=True)``): each enqueue runs once on every worker live
on the queue (worker processes, by their heartbeats), and ``result()`` maps each worker to
its copy's result; a copy read by another worker is handed to its own worker, which runs it
at once even with every slot busy; a worker killed before its copy ran: that copy fails
(WorkerLost) after its lease, the others succeed; no live worker: ``NoLiveWorkers``, nothing
written. Real redis-server; worker subprocesses on ``tests/apps/flowctl.py``."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from aioq import App, BroadcastJob, NoLiveWorkers, TaskFailed, Worker, chain, current_job
from aioq.keys import workers_key
from aioq.views import worker_stats
from tests.helpers import Spawned, WorkerProcess, eventually

pytestmark = pytest.mark.anyio

Spawn = Callable[..., WorkerProcess]


@pytest.fixture
def workers(redis_url: str) -> Iterator[Spawn]:
    spawned = Spawned()

    def spawn(app_name: str, vt: float = 5.0) -> WorkerProcess:
        env = {"AIOQ_TEST_APP": app_name, "AIOQ_TEST_VT": str(vt)}
        return spawned.start("tests.apps.flowctl:app", redis_url, env, "--queue", "fanout")

    yield spawn
    spawned.close()


def _fanout(app: App) -> Any:
    """The broadcast task of tests/apps/flowctl.py, as a producer registers it."""

    @app.task(broadcast=True, queue="fanout")
    async def whoami(tag: str) -> list[object]:
        raise AssertionError("runs in the worker processes")

    return whoami


async def _live(app: App, pids: set[int]) -> list[str]:
    async def seen() -> list[str]:
        stats = await worker_stats(app)
        live = [w.consumer for w in stats if w.pid in pids and "fanout" in w.queues]
        return live if len(live) == len(pids) else []

    return await eventually(seen, 20, f"workers {sorted(pids)} beating")


async def test_every_live_worker_process_runs_it_once(app: App, workers: Spawn) -> None:
    whoami = _fanout(app)
    procs = [workers(app.name) for _ in range(3)]
    consumers = await _live(app, {p.pid for p in procs})
    job = await whoami.enqueue("t1")
    assert isinstance(job, BroadcastJob)
    assert job.workers == sorted(consumers)
    # well inside the 5 s lease: a handed copy is taken at once, not found by its worker's
    # own reclaim after the lease
    results = await job.result(timeout=4)
    assert sorted(results) == sorted(consumers)
    for consumer, (pid, tag) in results.items():
        assert consumer.split(":")[1] == str(pid)  # ran on that very worker
        assert tag == "t1"
    # once each: one copy per worker, each run once
    infos = [await j.info() for j in (await job.copies()).values()]
    assert [i.attempts for i in infos] == [1, 1, 1]
    assert {i.worker for i in infos} == set(consumers)
    # the handle from another process's point of view: the record
    again = app.broadcast_job(job.id, "fanout")
    assert await again.result(timeout=5) == results


async def test_a_copy_for_a_busy_worker_is_handed_to_it(app: App) -> None:
    """Worker B's only slot is busy, so worker A reads B's copy: it hands it to B, which runs
    it at once beside its busy job (its lease began at the hand-over)."""
    hold = asyncio.Event()

    @app.task(queue="fanout")
    async def busy() -> None:
        await hold.wait()

    @app.task(broadcast=True, queue="fanout")
    async def where(tag: str) -> str:
        return f"{tag}:{current_job().id}"

    async with Worker(app, queues=["fanout"], concurrency=1) as b:
        blocker = await busy.enqueue()
        await eventually(lambda: _running(blocker), 5, "B runs the busy job")
        async with Worker(app, queues=["fanout"], concurrency=4) as a:
            await _live_in_process(app, a, b)
            job = await where.enqueue("x")
            results = await job.result(timeout=10)
            assert sorted(results) == sorted([a.consumer, b.consumer])
            copy = (await job.copies())[b.consumer]
            info = await copy.info()
            assert info.worker == b.consumer
            assert info.attempts == 1
            assert await blocker.status() == "running"  # B ran the copy beside it
            hold.set()
            await blocker.result(timeout=5)


async def _running(job: Any) -> bool:
    return bool(await job.status() == "running")


async def _live_in_process(app: App, *ws: Worker) -> None:
    want = {w.consumer for w in ws}

    async def seen() -> bool:
        return want <= {w.consumer for w in await worker_stats(app)}

    await eventually(seen, 10, "in-process workers beating")


async def test_a_killed_workers_copy_fails_after_its_lease(app: App, workers: Spawn) -> None:
    """A worker SIGKILLed just before the enqueue is still live by its heartbeat: it gets a
    copy, which a surviving worker hands to it; its lease lapses and the copy fails with
    WorkerLost, while the other workers' copies succeed."""
    whoami = _fanout(app)
    vt = 1.5
    procs = [workers(app.name, vt) for _ in range(3)]
    consumers = await _live(app, {p.pid for p in procs})
    victim = procs[0]
    victim.signal(signal.SIGKILL)
    await victim.exited(5)
    job = await whoami.enqueue("t2")
    assert len(job.workers) == 3
    outcomes = await job.result(timeout=20, return_exceptions=True)
    dead = next(c for c in consumers if c.split(":")[1] == str(victim.pid))
    lost = outcomes.pop(dead)
    assert isinstance(lost, TaskFailed)
    assert lost.exc_type == "WorkerLost"
    assert dead in str(lost)
    assert "lease lapsed" in str(lost)
    assert all(isinstance(v, list) and v[1] == "t2" for v in outcomes.values())
    with pytest.raises(TaskFailed, match="did not finish: its lease lapsed"):
        await job.result(timeout=5)


async def test_no_live_worker_raises_and_writes_nothing(app: App) -> None:
    whoami = _fanout(app)
    # a stale heartbeat (a worker that died a minute ago) does not count
    stale = {"beat": 0, "queues": ["fanout"], "host": "h", "pid": 1}
    await app.redis.hset(workers_key(app.name), "h:1:dead", orjson.dumps(stale))
    with pytest.raises(NoLiveWorkers, match="no live worker serves queue 'fanout'"):
        await whoami.enqueue("t3")
    keys = [k async for k in app.redis.scan_iter(match=f"aioq:{{{app.name}:*")]
    assert keys == []


async def test_broadcast_options_and_misuse(app: App) -> None:
    whoami = _fanout(app)
    with pytest.raises(TypeError, match="job_id, unique_for do\\(es\\) not apply"):
        whoami.options(unique_for=5, job_id="x")
    with pytest.raises(TypeError, match="is a broadcast task"):
        await app.enqueue("whoami", "t")
    with pytest.raises(TypeError, match="cannot be a workflow step"):
        await chain(app.s("whoami", "t")).enqueue()

    @app.task
    async def plain() -> None: ...

    with pytest.raises(TypeError, match="not a broadcast task"):
        await app.broadcast("plain")
    with pytest.raises(TypeError, match="bad arguments"):
        await whoami.enqueue()  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="rate_limit='1/s' does not apply"):

        @app.task(broadcast=True, rate_limit="1/s")
        async def limited() -> None: ...
