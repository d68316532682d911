"""Delays, ETA, expiry, cron registration and rate-limit basics, in-process."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta

import pytest

from aioq import App, JobStatus, TaskFailed, Worker, current_job
from aioq import views as aioq_views
from aioq.ratelimit import RateLimit, parse_rate

pytestmark = pytest.mark.anyio


async def test_delayed_job_runs_within_100ms_of_its_time(app: App) -> None:
    """A delayed job starts no earlier than due and, with an idle worker, soon after it."""

    @app.task
    async def tick() -> None: ...

    async with Worker(app):
        job = await tick.options(delay=timedelta(milliseconds=400)).enqueue()
        await job.result(timeout=5)
    info = await job.info()
    assert info.enqueued_at is not None
    assert info.started_at is not None
    late = (info.started_at - info.enqueued_at).total_seconds() - 0.4
    assert 0 <= late < 0.15


async def test_waiting_jobs_say_when_they_are_due_and_why(app: App) -> None:
    """A scheduled job's info has its due time and reason: "delay" (delay or eta), "retry"
    (a retry's backoff); once it is queued, running or finished it has neither."""

    @app.task(retries=1, backoff=30)
    async def flaky() -> None:
        raise ConnectionError("later")

    before = datetime.now(UTC)
    later = await flaky.options(delay=timedelta(seconds=60)).enqueue()
    eta = datetime(2100, 1, 1, tzinfo=UTC)
    at_eta = await flaky.options(eta=eta).enqueue()
    now = await flaky.enqueue()
    info = await later.info()
    assert (info.status, info.wait_reason) == (JobStatus.SCHEDULED, "delay")
    assert info.due_at is not None
    assert before + timedelta(seconds=59) < info.due_at < before + timedelta(seconds=62)
    info = await at_eta.info()
    assert (info.wait_reason, info.due_at) == ("delay", eta)
    info = await now.info()
    assert (info.status, info.due_at, info.wait_reason) == (JobStatus.QUEUED, None, None)

    async with Worker(app):
        for _ in range(500):  # its first attempt fails: it waits for its backoff (15-30 s)
            if (await now.status()) is JobStatus.SCHEDULED:
                break
            await asyncio.sleep(0.01)
    info = await now.info()
    assert (info.status, info.wait_reason) == (JobStatus.SCHEDULED, "retry")
    assert info.due_at is not None
    assert datetime.now(UTC) + timedelta(seconds=10) < info.due_at
    [row] = [
        r for r in await aioq_views.list_jobs(app, status=JobStatus.SCHEDULED) if r.id == now.id
    ]
    assert (row.due_at, row.wait_reason) == (info.due_at, "retry")
    assert row.as_dict()["due_at"] == info.due_at.isoformat()

    await app.redis.zadd(app.keys().scheduled, {later.id: 0})  # due now: promoted
    await Worker(app, burst=True).run()  # drains, then returns (leaving `async with` would stop it)
    info = await later.info()
    assert info.status.finished or info.status is JobStatus.SCHEDULED
    assert info.wait_reason in (None, "retry")  # the delay is over; a retry may wait again
    assert await app.redis.hget(app.keys().job(later.id), "wait") in (None, b"retry")


async def test_eta_in_the_past_runs_now_and_naive_means_utc(app: App) -> None:
    @app.task
    async def tick() -> None: ...

    past = await tick.options(eta=datetime.now(UTC) - timedelta(hours=1)).enqueue()
    assert await past.status() is JobStatus.QUEUED
    naive_future = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)
    future = await tick.options(eta=naive_future).enqueue()
    assert await future.status() is JobStatus.SCHEDULED
    due = await app.redis.zscore(app.keys().scheduled, future.id)
    assert due is not None
    assert abs(due / 1000 - naive_future.replace(tzinfo=UTC).timestamp()) < 0.01


async def test_expired_job_never_runs(app: App) -> None:
    """A job not started before `expires` ends expired and is never run."""
    ran: list[str] = []

    @app.task
    async def work() -> None:
        ran.append("ran")

    queued = await work.options(expires=0.1).enqueue()
    scheduled = await work.options(delay=0.3, expires=0.2).enqueue()
    fresh = await work.options(expires=timedelta(minutes=5)).enqueue()
    await asyncio.sleep(0.2)
    async with Worker(app):
        await fresh.result(timeout=5)
        for job in (queued, scheduled):
            with pytest.raises(TaskFailed) as caught:
                await job.result(timeout=5)
            assert caught.value.exc_type == "JobExpired"
            assert await job.status() is JobStatus.EXPIRED
    assert ran == ["ran"]


async def test_expires_at_datetime(app: App) -> None:
    @app.task
    async def work() -> None: ...

    job = await work.options(expires=datetime.now(UTC) - timedelta(seconds=1)).enqueue()
    async with Worker(app):
        with pytest.raises(TaskFailed, match="expired"):
            await job.result(timeout=5)


@pytest.mark.parametrize(
    "bad", ["10/d", "ten/m", "0/s", "5", "", "-1/m", "1.5/s", "10/minutes", "10/M", "10/ms"]
)
def test_invalid_rate_strings_name_the_string(bad: str, redis_url: str) -> None:
    app = App("rates", redis_url=redis_url)
    with pytest.raises(ValueError, match="invalid rate limit") as caught:

        @app.task(rate_limit=bad)
        async def t() -> None: ...

    assert repr(bad) in str(caught.value)
    assert app.tasks == {}


def test_rate_strings_parse() -> None:
    assert parse_rate("10/m") == RateLimit(10, 60_000)
    assert parse_rate(" 5 / s ") == RateLimit(5, 1_000)
    assert parse_rate("3/hour") == RateLimit(3, 3_600_000)


@pytest.mark.parametrize(
    ("text", "period_ms"),
    [
        ("10/s", 1_000), ("10/sec", 1_000), ("10/second", 1_000),
        ("10/m", 60_000), ("10/min", 60_000), ("10/minute", 60_000),
        ("10/h", 3_600_000), ("10/hr", 3_600_000), ("10/hour", 3_600_000),
    ],
)  # fmt: skip
def test_every_documented_unit_parses(text: str, period_ms: int) -> None:
    """The docs (docs/scheduling.md) list exactly these spellings; the parser takes exactly
    these."""
    assert parse_rate(text) == RateLimit(10, period_ms)
    assert str(parse_rate("7/minute")) == "7/m"


def test_cron_decorator_validates_at_decoration(redis_url: str) -> None:
    """Invalid expressions, bad intervals and cron tasks with arguments fail at once."""
    app = App("crons", redis_url=redis_url)
    with pytest.raises(
        ValueError, match=r"invalid cron expression '61 \* \* \* \*' for task 'hourly'"
    ):

        @app.cron("61 * * * *")
        async def hourly() -> None: ...

    assert app.tasks == {}  # nothing registered
    with pytest.raises(ValueError, match="every="):
        app.cron(every=-5)
    with pytest.raises(ValueError, match="unknown timezone 'Nowhere/City'"):
        app.cron("0 9 * * *", timezone="Nowhere/City")
    with pytest.raises(ValueError, match="must take no arguments"):

        @app.cron(every=10)
        async def needs(x: int) -> None: ...


def test_stacked_cron_schedules_share_one_task(redis_url: str) -> None:
    app = App("crons2", redis_url=redis_url)

    @app.cron("*/5 * * * *")
    @app.cron(every=timedelta(seconds=30), catch_up="skip")
    async def report() -> None: ...

    assert list(app.tasks) == ["report"]
    assert [s.name for s in app.crons] == ["report@every 30s", "report@*/5 * * * *"]
    assert app.crons[0].catch_up == "skip"
    with pytest.raises(ValueError, match="already registered"):
        app.cron(every=30)(report)


async def test_cron_fires_each_tick_once_with_two_workers(app: App) -> None:
    """Two workers on one app fire every tick of an interval cron exactly once."""
    ticks: list[str] = []

    @app.cron(every=0.2)
    async def beat() -> None:
        ticks.append(current_job().id)

    async with Worker(app), Worker(app):
        await asyncio.sleep(1.5)
    assert len(ticks) == len(set(ticks))
    stamps = sorted(int(t.rsplit(":", 1)[1]) for t in ticks)
    assert 5 <= len(stamps) <= 8
    assert all(b - a == 200 for a, b in itertools.pairwise(stamps))
    [stats] = await aioq_views.cron_stats(app)  # the last run is a tick that enqueued its job
    assert stats["last_run"] is not None
    assert datetime.fromisoformat(stats["last_run"]).timestamp() * 1000 >= stamps[-1]


async def test_a_cron_that_never_ran_says_so(app: App) -> None:
    """A schedule whose first tick is only marked (a worker's first start) has a last tick
    handled but no last run."""

    @app.cron("0 0 1 1 *")  # once a year: it will not come round during the test
    async def yearly() -> None: ...

    async with Worker(app):
        for _ in range(200):
            [stats] = await aioq_views.cron_stats(app)
            if stats["last_tick"] is not None:
                break
            await asyncio.sleep(0.01)
    assert stats["last_tick"] is not None
    assert stats["last_run"] is None


async def test_rate_limit_caps_starts_and_spends_no_attempt(app: App) -> None:
    """A "5/s" task never starts more than 5 times in any 1 s window; no attempt is spent."""

    @app.task(rate_limit="5/s")
    async def call_api(i: int) -> int:
        return i

    jobs = await app.enqueue_many([call_api.call(i) for i in range(12)])
    t0 = time.monotonic()
    async with Worker(app, concurrency=20):
        assert [await j.result(timeout=10) for j in jobs] == list(range(12))
    assert time.monotonic() - t0 >= 1.9  # 12 starts at 5/s need at least two full windows
    infos = [await j.info() for j in jobs]
    assert all(i.attempts == 1 for i in infos)
    starts = sorted(i.started_at.timestamp() for i in infos if i.started_at)
    for k, first in enumerate(starts):
        assert sum(1 for s in starts[k:] if s < first + 1.0) <= 5
    assert await app.rate_limits() == {"call_api": "5/s"}


async def test_rate_limit_override_at_run_time(app: App) -> None:
    """set_rate_limit overrides the declared limit for every worker; None restores it."""

    @app.task(rate_limit="1000/s")
    async def fast() -> None: ...

    await app.set_rate_limit("fast", "2/s")
    jobs = await app.enqueue_many([fast.call() for _ in range(5)])
    t0 = time.monotonic()
    async with Worker(app):
        for j in jobs:
            await j.result(timeout=10)
        assert time.monotonic() - t0 >= 1.9
        assert await app.rate_limits() == {"fast": "2/s"}
        await app.set_rate_limit("fast", None)
        assert await app.rate_limits() == {"fast": "1000/s"}
    with pytest.raises(ValueError, match="invalid rate limit 'often'"):
        await app.set_rate_limit("fast", "often")
