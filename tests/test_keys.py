"""Flow control by key, in-process: per-key concurrency and rate limits, what a waiting job
holds (nothing), the paths that free a key's place (finish, retry backoff, cancel, expiry),
places healed after a record vanished, workflows and purge, the views, and bad input.

The guarantees across worker processes (and a SIGKILLed one), and the fairness bound with a
100,000-job backlog, are in ``test_key_faults.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
from datetime import datetime
from typing import Any

import httpx
import pytest

from aioq import App, JobStatus, Worker, chain
from aioq import ops as aioq_ops
from aioq import views as aioq_views
from aioq.dashboard import dashboard
from aioq.keys import key_group
from tests.helpers import ROOT, eventually

pytestmark = pytest.mark.anyio


def peak_overlap(spans: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant (an end at the same instant as a start closes
    first: the place went from one to the other)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


async def spans_of(app: App, job_ids: list[str]) -> list[tuple[datetime, datetime]]:
    """Each job's (started_at, finished_at) as Redis recorded them."""
    out = []
    for jid in job_ids:
        info = await app.job(jid).info()
        assert info.started_at is not None
        assert info.finished_at is not None
        out.append((info.started_at, info.finished_at))
    return out


async def drain(app: App, jobs: list[Any], timeout: float = 10, **options: Any) -> None:
    """Run a worker until every one of ``jobs`` has finished (a burst worker would stop while
    a rate limit keeps some scheduled)."""
    async with Worker(app, **options):
        for j in jobs:
            await j.result(timeout=timeout)


async def app_keys(app: App) -> list[bytes]:
    """Every Redis key of the app's default queue."""
    tag = app.keys().tag.replace("{", "\\{").replace("}", "\\}")
    return [k async for k in app.redis.scan_iter(match=tag + "*")]


# -- per-key concurrency ------------------------------------------------------------------


async def test_at_most_key_concurrency_jobs_of_a_key_run_at_once(app: App) -> None:
    """Three keys with key_concurrency=2 on a worker with room for all: each key runs two at
    a time (measured from the records' started_at/finished_at), never more, and every key
    reaches its limit."""

    @app.task(concurrency_key=lambda key, i: key, key_concurrency=2)
    async def work(key: str, i: int) -> int:
        await asyncio.sleep(0.03)
        return i

    jobs = await app.enqueue_many([work.call(f"k{i % 3}", i) for i in range(36)])
    await drain(app, jobs, concurrency=30)
    for k in range(3):
        ids = [j.id for i, j in enumerate(jobs) if i % 3 == k]
        assert peak_overlap(await spans_of(app, ids)) == 2
    infos = [await j.info() for j in jobs]
    assert {i.status for i in infos} == {JobStatus.SUCCEEDED}
    assert {i.attempts for i in infos} == {1}  # waiting spends no attempt
    assert {i.concurrency_key for i in infos} == {"k0", "k1", "k2"}
    # every place was given back: no key holds one, none has jobs waiting
    assert await app.redis.zcard(app.keys().keyed) == 0
    for k in range(3):
        assert await app.redis.llen(app.keys().keyrun(key_group("work", f"k{k}"))) == 0


async def test_a_waiting_job_holds_no_slot_and_starts_when_its_key_has_room(app: App) -> None:
    """On a worker with ONE slot, a key limited to one job: the unkeyed job enqueued after the
    key's three starts right after the key's first (the key's others wait in no stream, so
    they take no slot); each of the key's jobs is on the stream the moment the one before it
    ended: the script that finished it put it there, no poll."""

    order: list[str] = []

    @app.task(concurrency_key=lambda i: "one", key_concurrency=1)
    async def keyed(i: int) -> None:
        order.append(f"k{i}")
        await asyncio.sleep(0.1)

    @app.task
    async def plain() -> None:
        order.append("plain")

    ks = [await keyed.enqueue(i) for i in range(3)]
    await plain.enqueue()
    assert await app.redis.xlen(app.keys().stream) == 2  # k0 and plain; k1, k2 wait
    assert (await ks[1].info()).wait_reason == "key limit"
    async with Worker(app, concurrency=1):
        for before, after in itertools.pairwise(ks):
            await before.result(timeout=5)
            # the notification comes from the script that finished `before`: `after` had its
            # place by then (it is no longer waiting), whatever the worker does next
            info = await after.info()
            assert info.wait_reason is None
            assert info.status is not JobStatus.SCHEDULED
        await ks[-1].result(timeout=5)
    assert order == ["k0", "plain", "k1", "k2"]


async def test_explicit_key_and_default_limit_of_one(app: App) -> None:
    """``options(concurrency_key=...)`` keys a job of a task that computes none; a task that
    declares no limit runs one job of a key at a time; jobs without a key are not limited."""

    @app.task
    async def sync(i: int) -> None:
        await asyncio.sleep(0.03)

    keyed = [await sync.options(concurrency_key="tenant-7").enqueue(i) for i in range(4)]
    free = [await sync.enqueue(i) for i in range(4)]
    await drain(app, keyed + free, concurrency=10)
    assert peak_overlap(await spans_of(app, [j.id for j in keyed])) == 1
    assert peak_overlap(await spans_of(app, [j.id for j in free])) == 4
    assert (await keyed[0].info()).concurrency_key == "tenant-7"
    assert (await free[0].info()).concurrency_key is None


async def test_a_retry_backoff_gives_the_place_to_the_next_job(app: App) -> None:
    """A keyed job waiting for its retry's backoff holds no place: the next job of its key
    runs meanwhile; the retry takes a place again when it is due."""

    @app.task(concurrency_key=lambda name: "k", key_concurrency=1, retries=1, backoff=lambda a: 0.3)
    async def flaky(name: str) -> str:
        from aioq import current_job

        if name == "first" and current_job().attempt == 1:
            raise ConnectionError("once")
        await asyncio.sleep(0.05)
        return name

    first = await flaky.enqueue("first")
    second = await flaky.enqueue("second")
    async with Worker(app, concurrency=5):
        assert await second.result(timeout=5) == "second"
        assert await first.result(timeout=5) == "first"
    a, b = await first.info(), await second.info()
    assert a.attempts == 2
    assert b.attempts == 1
    assert b.finished_at is not None
    assert a.started_at is not None
    assert b.finished_at <= a.started_at  # the second ran during the first's backoff


async def test_cancelled_and_expired_jobs_free_or_skip_their_place(app: App) -> None:
    """Cancelling the running job of a full key gives its place to the next; a waiting job
    cancelled, or expired while it waited, never runs and the key goes on."""
    ran: list[int] = []

    @app.task(concurrency_key=lambda i: "k", key_concurrency=1)
    async def step(i: int) -> int:
        ran.append(i)
        if i == 0:
            await asyncio.sleep(30)
        await asyncio.sleep(0.05)
        return i

    long = await step.enqueue(0)
    waiting = await step.enqueue(1)
    expiring = await step.options(expires=0.2).enqueue(2)
    last = await step.enqueue(3)
    assert await waiting.cancel()  # waiting: cancelled where it is
    async with Worker(app, concurrency=5):
        await eventually(lambda: _running(long), 5, "the first job running")
        await asyncio.sleep(0.3)  # the third's expiry passes while it waits
        assert await long.cancel()
        assert await last.result(timeout=5) == 3
    assert ran == [0, 3]
    assert await waiting.status() is JobStatus.CANCELLED
    assert await expiring.status() is JobStatus.EXPIRED


async def _running(job: Any) -> bool:
    return bool(await job.status() is JobStatus.RUNNING)


async def test_a_place_no_job_holds_comes_back(app: App) -> None:
    """A holder's record deleted under a full key (another program): the promote sweep checks
    the key's places against the records and gives the place to the waiting job."""

    @app.task(concurrency_key=lambda i: "k", key_concurrency=1)
    async def job(i: int) -> int:
        return i

    holder = await job.enqueue(0)
    waiting = await job.enqueue(1)
    keys, group = app.keys(), key_group("job", "k")
    await app.redis.delete(keys.job(holder.id))
    await app.redis.xtrim(keys.stream, maxlen=0)
    await app.redis.zadd(keys.keyed, {group: 0})  # the sweep due now, not KEY_CHECK_MS on
    async with Worker(app, concurrency=2):
        assert await waiting.result(timeout=5) == 1
    assert await app.redis.llen(keys.keyrun(group)) == 0


# -- per-key rate limits ------------------------------------------------------------------


def max_in_window(times: list[datetime], seconds: float) -> int:
    ts = sorted(t.timestamp() for t in times)
    return max(sum(1 for u in ts[i:] if u - t < seconds) for i, t in enumerate(ts))


async def test_key_rate_limit_caps_starts_per_window_and_runs_unlimited_at_once(
    app: App,
) -> None:
    """key_rate_limit="4/s" alone: never more than 4 starts of one key in any second (from
    started_at), no attempt spent, another key is not slowed by it, and without a
    key_concurrency the jobs of a key that started run at once (8 long jobs overlap)."""

    @app.task(concurrency_key=lambda key, i: key, key_rate_limit="4/s")
    async def call(key: str, i: int) -> None:
        await asyncio.sleep(1.2)

    a = await app.enqueue_many([call.call("a", i) for i in range(8)])
    b = await app.enqueue_many([call.call("b", i) for i in range(2)])
    await drain(app, a + b, concurrency=20)
    infos = [await j.info() for j in a]
    starts = [i.started_at for i in infos if i.started_at]
    assert max_in_window(starts, 1.0) == 4
    assert {i.attempts for i in infos} == {1}
    assert peak_overlap(await spans_of(app, [j.id for j in a])) == 8  # rate, not concurrency
    b_starts = [(await j.info()).started_at for j in b]
    assert all(t is not None and t < max(starts) for t in b_starts)


async def test_key_rate_limit_with_concurrency_and_the_task_limit(app: App) -> None:
    """A key with both limits and a task rate limit on top: every limit holds."""

    @app.task(
        concurrency_key=lambda i: "k", key_concurrency=1, key_rate_limit="3/s", rate_limit="5/s"
    )
    async def both(i: int) -> None:
        await asyncio.sleep(0.01)

    jobs = await app.enqueue_many([both.call(i) for i in range(7)])
    await drain(app, jobs, concurrency=10)
    infos = [await j.info() for j in jobs]
    assert max_in_window([i.started_at for i in infos if i.started_at], 1.0) <= 3
    assert peak_overlap(await spans_of(app, [j.id for j in jobs])) == 1
    assert {i.attempts for i in infos} == {1}


# -- workflows, priorities, operations ----------------------------------------------------


async def test_keyed_workflow_steps_and_priorities(app: App) -> None:
    """A keyed step of a chain waits for a place like any keyed job; a keyed job's place puts
    its entry on the stream of its priority."""

    @app.task(concurrency_key=lambda x: "k", key_concurrency=1)
    async def add(x: int, y: int = 1) -> int:
        await asyncio.sleep(0.02)
        return x + y

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    blocker = await add.enqueue(100)
    flow = await chain(double.s(1), add.options(concurrency_key="k").s(5)).enqueue()
    urgent = await add.options(priority=9).enqueue(7)
    async with Worker(app, concurrency=5):
        assert await flow.result(timeout=5) == 7
        assert await urgent.result(timeout=5) == 8
        assert await blocker.result(timeout=5) == 101
    assert (await urgent.info()).priority == 9


async def test_purge_deletes_waiting_keyed_jobs(app: App) -> None:
    """``aioq purge`` deletes the jobs waiting on keys too, and leaves no place held."""

    @app.task(concurrency_key=lambda i: f"k{i % 2}", key_concurrency=1)
    async def job(i: int) -> None: ...

    jobs = await app.enqueue_many([job.call(i) for i in range(10)])
    entries, deleted = await aioq_ops.purge_queue(app, app.keys().queue)
    assert deleted == 10
    assert entries >= 10
    assert await app.redis.exists(*(app.keys().job(j.id) for j in jobs)) == 0
    assert await aioq_views.key_stats(app) == []
    for k in ("k0", "k1"):
        assert await app.redis.llen(app.keys().keyrun(key_group("job", k))) == 0


async def test_retried_failed_keyed_job_goes_through_its_key(app: App) -> None:
    """``aioq retry`` of a failed keyed job: it waits for a place while its key is full."""

    @app.task(concurrency_key=lambda x: "k", key_concurrency=1)
    async def boom(x: int) -> None:
        if x == 0:
            raise ValueError("no")
        await asyncio.sleep(30)

    failed = await boom.enqueue(0)
    await Worker(app, burst=True).run()
    assert await failed.status() is JobStatus.FAILED
    busy = await boom.enqueue(1)
    async with Worker(app, concurrency=5):
        await eventually(lambda: _running(busy), 5, "the key's place taken")
        assert (await aioq_ops.retry(app, [failed.id]))[failed.id] == "requeued"
        info = await failed.info()
        assert (info.status, info.wait_reason) == (JobStatus.QUEUED, "key limit")
        await busy.cancel()
        with pytest.raises(Exception, match="no"):
            await failed.result(timeout=5)


# -- views ----------------------------------------------------------------------------------


async def test_views_show_keys_at_their_limit_and_their_waiting_jobs(app: App) -> None:
    """key_stats lists the keys at their limit, most waiting first, with their places and
    limits; queue_stats counts them; queued listings include the waiting jobs."""

    @app.task(concurrency_key=lambda key, i: key, key_concurrency=2, key_rate_limit="10/m")
    async def sync(key: str, i: int) -> None: ...

    await app.enqueue_many([sync.call("big", i) for i in range(7)])
    await app.enqueue_many([sync.call("small", i) for i in range(3)])
    await app.enqueue_many([sync.call("free", 0)])
    stats = await aioq_views.key_stats(app)
    assert [(s.task, s.key, s.active, s.waiting) for s in stats] == [
        ("sync", "big", 2, 5),
        ("sync", "small", 2, 1),
    ]
    assert (stats[0].concurrency, stats[0].rate) == (2, "10/m")
    assert stats[0].as_dict()["key"] == "big"
    assert len(await aioq_views.key_stats(app, limit=1)) == 1
    [queue] = await aioq_views.queue_stats(app)
    assert (queue.queued, queue.keys_waiting) == (5, 2)  # 2 + 2 + 1 on the stream
    rows = await aioq_views.list_jobs(app, status=JobStatus.QUEUED, limit=50)
    waiting = [r for r in rows if r.wait_reason == "key limit"]
    assert len(rows) == 11
    assert len(waiting) == 6
    assert {r.concurrency_key for r in waiting} == {"big", "small"}


def aioq_cli(app: App, *args: str) -> subprocess.CompletedProcess[str]:
    """``aioq ARGS`` on ``tests.apps.keyed:app`` named as ``app``, on its Redis."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIOQ_REDIS_URL": app.redis_url,
           "AIOQ_TEST_APP": app.name, "COLUMNS": "200"}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "aioq", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def test_cli_and_dashboard_show_keys_at_their_limit(app: App) -> None:
    """``aioq info`` and ``aioq jobs --keys`` (table and JSON), ``aioq jobs --status queued``
    and the dashboard's overview show the keys at their limit and the jobs waiting on them."""

    @app.task(concurrency_key=lambda key, ms: key, key_concurrency=2)
    async def pair(key: str, ms: int) -> None: ...

    await app.enqueue_many([pair.call("tenant-7", 1) for _ in range(5)])
    target = "tests.apps.keyed:app"
    info = await asyncio.to_thread(aioq_cli, app, "info", target)
    assert info.returncode == 0, info.stderr
    assert "1 concurrency key(s) at their limit" in info.stdout
    assert re.search(r"default\s+.\s+pair\s+.\s+tenant-7\s+.\s+2\s+.\s+3\s+.\s+2 at once",
                     info.stdout), info.stdout  # fmt: skip
    listed = await asyncio.to_thread(aioq_cli, app, "jobs", target, "--keys", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [
        {"queue": "default", "task": "pair", "key": "tenant-7", "active": 2, "waiting": 3,
         "concurrency": 2, "rate": None}
    ]  # fmt: skip
    queued = await asyncio.to_thread(aioq_cli, app, "jobs", target, "--status", "queued")
    assert queued.stdout.count("key 'tenant-7' at its limit") == 3, queued.stdout
    transport = httpx.ASGITransport(app=dashboard(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        overview = (await client.get("/api/overview")).json()
        jobs = (await client.get("/api/jobs")).json()["jobs"]
    assert [(k["key"], k["waiting"]) for k in overview["keys"]] == [("tenant-7", 3)]
    assert overview["queues"][0]["keys_waiting"] == 1
    assert sum(j["wait_reason"] == "key limit" for j in jobs) == 3


# -- bad input ------------------------------------------------------------------------------


async def test_bad_keys_and_limits_are_rejected_naming_the_value_and_write_nothing(
    app: App,
) -> None:
    """A concurrency_key function that raises or returns a non-string, an empty or over-long
    key, key_concurrency < 1 or not an int, an invalid key_rate_limit, a key function on a
    step that gets its argument from the previous step: clear errors, nothing written."""

    def broken(user: dict[str, str]) -> str:
        return user["id"]

    @app.task(concurrency_key=broken, key_concurrency=2)
    async def a(user: dict[str, str]) -> None: ...

    @app.task(concurrency_key=lambda n: n, key_concurrency=2)
    async def b(n: Any) -> None: ...

    with pytest.raises(ValueError, match=r"task 'a': its concurrency_key function broken raised "
                       r"KeyError: 'id' for \(\{'name': 'x'\}\)") as caught:  # fmt: skip
        await a.enqueue({"name": "x"})
    assert isinstance(caught.value.__cause__, KeyError)
    with pytest.raises(TypeError, match=r"returned 7 \(int\) for \(7\); a concurrency key must"):
        await b.enqueue(7)
    with pytest.raises(ValueError, match="returned an empty string"):
        await b.enqueue("")
    with pytest.raises(ValueError, match="a key of 300 characters"):
        await b.enqueue("x" * 300)
    with pytest.raises(TypeError, match=r"concurrency_key is 5 \(int\)"):
        b.options(concurrency_key=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency_key is an empty string"):
        b.options(concurrency_key="")
    with pytest.raises(TypeError, match="gets its first one from the previous step"):
        await chain(a.s({"id": "1"}), b.s()).enqueue()
    # one bad call in a batch: none of the batch is written
    with pytest.raises(TypeError, match="returned None"):
        await app.enqueue_many([b.call("fine"), b.call(None)])
    assert await app_keys(app) == []

    with pytest.raises(ValueError, match="task 'c': key_concurrency must be >= 1, got 0"):
        app.task(name="c", key_concurrency=0)(_noop)
    with pytest.raises(TypeError, match="task 'c': key_concurrency must be an int >= 1, got '2'"):
        app.task(name="c", key_concurrency="2")(_noop)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match=r"task 'c': key_rate_limit: invalid rate limit '10/x'"):
        app.task(name="c", key_rate_limit="10/x")(_noop)
    with pytest.raises(TypeError, match=r"task 'c': concurrency_key is 3 \(int\)"):
        app.task(name="c", concurrency_key=3)(_noop)  # type: ignore[call-overload]
    assert "c" not in app.tasks  # nothing registered


async def _noop() -> None: ...
