"""Testing code that uses aioq: a private Redis, running the jobs a test made, seeing what
waits, and a pytest plugin.

    from aioq.testing import redis_server, drain, queued, isolated

* ``redis_server()``: ``async with redis_server() as url``, a redis-server of its own on a
  unix socket (``embedded.py``), stopped on exit.
* ``drain(app)``: runs the app's queued jobs, and its scheduled ones that are due, in this
  process with a real ``Worker`` in burst mode, until none is left; then raises the first
  failure (``TaskFailed``) if a job failed for good. Retries are run at once, whatever their
  backoff: a test should not sleep through it. Jobs delayed (``delay=``, ``eta=``) or held by
  a rate limit until later are left scheduled: they are not due, and ``queued()`` lists them.
* ``queued(app, task=...)``: the ``JobInfo`` of every job waiting (queued, or scheduled for
  later), oldest first, with its ``args`` and ``kwargs``.
* ``isolated(app, url)``: the app (the user's own object, which their tasks belong to) bound to
  ``url`` under a name of its own for the block, so tests sharing a Redis never see each
  other's jobs; restored on exit.

The pytest plugin is this module: loaded by the ``pytest11`` entry point of an installed
``aioq-redis`` (or ``pytest -p aioq.testing``; ``-p no:aioq.testing`` turns it off). It gives
two fixtures:

* ``aioq_redis_url`` (session): the URL of a private redis-server for the test session;
  override it in a ``conftest.py`` to use another Redis (CI's service, say).
* ``aioq_app``: the app named by the ini option ``aioq_app = "MODULE:APP"`` (in
  ``[tool.pytest.ini_options]``), ``isolated`` on ``aioq_redis_url`` for one test. It is an
  async fixture run by anyio's pytest plugin (an aioq dependency): mark the tests
  ``pytest.mark.anyio``, as FastAPI's documentation does.

The helpers need no pytest: the plugin's part is defined only when pytest imports.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread

from .app import App
from .embedded import EmbeddedRedis
from .errors import JobNotFound, TaskFailed
from .job import JobInfo, JobStatus
from .keys import QueueKeys
from .task import Task
from .views import list_jobs
from .worker import Worker

__all__ = ["drain", "isolated", "queued", "redis_server"]

_WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED)
_EPOCH = datetime.fromtimestamp(0, tz=UTC)

MAX_ROUNDS = 100
"""Burst workers one ``drain`` runs at most (one more for each round of retries), so a task
that raises ``Retry`` for ever fails the test instead of hanging it."""


@asynccontextmanager
async def redis_server() -> AsyncIterator[str]:
    """``async with redis_server() as url``: a private redis-server (unix socket, nothing on
    disk) for a test or a session; ``RedisServerNotFound`` says how to install one."""
    server = EmbeddedRedis()
    await anyio.to_thread.run_sync(server.start)  # it polls until the server answers
    try:
        yield server.url
    finally:
        await anyio.to_thread.run_sync(server.stop)


async def drain(app: App, *, queues: Iterable[str] | None = None) -> None:
    """Run every queued job of the app, and every scheduled one that is due, in this process
    until none is left (``queues``: only those; default every queue the app knows).

    A real ``Worker`` in burst mode runs them, as ``aioq worker --burst`` would, so jobs go
    through the same encoding, retries, timeouts and result writes as in production.
    Retries are run at once, whatever their backoff or ``Retry(delay=)``; jobs delayed or
    rate limited until later stay scheduled. Once everything due has run, a job that failed
    for good during the drain raises ``TaskFailed`` (the earliest such job; its remote
    traceback and the ids of any others are in the exception's notes). Cron schedules of the
    served queues fire as in any worker.
    """
    names = list(queues) if queues is not None else app.queues
    keys = [app.keys(q) for q in names]
    since = await _redis_ms(app)
    for _ in range(MAX_ROUNDS):
        await Worker(app, queues=names, burst=True).run()
        if not await _hasten_retries(app, keys):
            break
    else:
        raise RuntimeError(
            f"drain(): jobs of app {app.name!r} were still being retried after {MAX_ROUNDS} "
            "rounds (a task that raises Retry for ever?)"
        )
    failure = await _first_failure(app, keys, since)
    if failure is not None:
        raise failure


async def queued(
    app: App,
    task: Task[Any, Any] | str | None = None,
    *,
    queue: str | None = None,
    limit: int = 1000,
) -> list[JobInfo]:
    """The jobs waiting, oldest first: queued, or scheduled for later (``due_at`` and
    ``wait_reason`` say when and why), each with its ``args`` and ``kwargs``; only those of
    ``task`` (a task or its name) and of ``queue`` when given, at most ``limit``."""
    name = task.name if isinstance(task, Task) else task
    rows = await list_jobs(
        app,
        status=_WAITING,
        task=name,
        queues=[queue] if queue else None,
        limit=limit,
    )
    rows.sort(key=lambda r: r.enqueued_at or _EPOCH)  # stable: ties stay in stream order
    infos = await asyncio.gather(
        *(app.job(r.id, r.queue).info() for r in rows), return_exceptions=True
    )
    out: list[JobInfo] = []
    for info in infos:
        if isinstance(info, JobNotFound):  # its record expired meanwhile
            continue
        if isinstance(info, BaseException):
            raise info
        if info.status in _WAITING:  # (one that started meanwhile is not waiting)
            out.append(info)
    return out


@asynccontextmanager
async def isolated(app: App, redis_url: str, name: str | None = None) -> AsyncIterator[App]:
    """``async with isolated(app, url) as app``: the same app object bound to ``url`` under
    ``name`` (default: its own name and a random suffix), so its tasks, and any code that
    enqueues through them, use keys no other test sees; its name and Redis come back on exit.

    The app's connections on this event loop are closed on entry and on exit (``rebind``
    needs that); connections open on another running loop make it raise ``RuntimeError``.
    """
    old_name, old_url = app.name, app.redis_url
    await app.aclose()
    app.rebind(redis_url=redis_url, name=name or f"{old_name}-{uuid.uuid4().hex[:10]}")
    try:
        yield app
    finally:
        await app.aclose()
        app.rebind(redis_url=old_url, name=old_name)


# -- drain's parts ------------------------------------------------------------------------


async def _redis_ms(app: App) -> int:
    """Redis' clock in epoch ms, the clock the failed-jobs index is scored by."""
    seconds, micros = await app._call(app.redis.time())
    return int(seconds) * 1000 + int(micros) // 1000


async def _hasten_retries(app: App, keys: list[QueueKeys]) -> int:
    """Make every scheduled retry due now; returns how many there were. A job's due time is
    its score in the scheduled set, and ``wait`` says why it waits (``complete.lua``); ZADD
    XX moves only members still there, so a job promoted meanwhile is left alone."""
    redis = app.redis
    async with redis.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.zrange(k.scheduled, 0, -1)
        scheduled: list[list[bytes]] = await pipe.execute()
    waiting = [(k, jid.decode()) for k, ids in zip(keys, scheduled, strict=True) for jid in ids]
    if not waiting:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for k, jid in waiting:
            pipe.hget(k.job(jid), "wait")
        reasons: list[bytes | None] = await pipe.execute()
    retries = [(k, jid) for (k, jid), why in zip(waiting, reasons, strict=True) if why == b"retry"]
    if retries:
        now = await _redis_ms(app)
        async with redis.pipeline(transaction=False) as pipe:
            for k, jid in retries:
                pipe.zadd(k.scheduled, {jid: now}, xx=True)
            await pipe.execute()
    return len(retries)


async def _first_failure(app: App, keys: list[QueueKeys], since: int) -> TaskFailed | None:
    """A ``TaskFailed`` for the earliest job that failed for good at or after ``since``, with
    its traceback and the other failures in notes; None when none failed."""
    async with app.redis.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.zrangebyscore(k.failed, since, "+inf", withscores=True)
        found: list[list[tuple[bytes, float]]] = await pipe.execute()
    failed = sorted(
        (score, jid.decode(), k.queue)
        for k, rows in zip(keys, found, strict=True)
        for jid, score in rows
    )
    if not failed:
        return None
    _, job_id, queue = failed[0]
    info = await app.job(job_id, queue).info()
    exc = TaskFailed(job_id, info.exc_type or "Error", info.error or "failed", info.traceback or "")
    exc.add_note(f"job {job_id!r} of task {info.task!r} failed in drain(); its traceback:")
    exc.add_note((info.traceback or "(none recorded)").rstrip())
    if len(failed) > 1:
        others = ", ".join(repr(jid) for _, jid, _ in failed[1:])
        exc.add_note(f"{len(failed) - 1} more job(s) failed for good: {others}")
    return exc


# -- the pytest plugin --------------------------------------------------------------------

try:
    import pytest
except ModuleNotFoundError:  # the helpers above work without pytest
    pass
else:

    def pytest_addoption(parser: pytest.Parser) -> None:
        parser.addini(
            "aioq_app",
            "MODULE:APP of the aioq App the aioq_app fixture isolates for each test",
            default="",
        )

    @pytest.fixture(scope="session")
    def aioq_redis_url() -> Iterator[str]:
        """A private redis-server for the test session (unix socket, nothing on disk)."""
        with EmbeddedRedis() as server:
            yield server.url

    @pytest.fixture
    async def aioq_app(
        request: pytest.FixtureRequest, aioq_redis_url: str, anyio_backend: object
    ) -> AsyncIterator[App]:
        """The ``aioq_app = "MODULE:APP"`` app, bound to ``aioq_redis_url`` under a name
        unique to this test (``isolated``), so its keys are this test's alone."""
        from .cli.target import CliError, load_app

        spec = str(request.config.getini("aioq_app"))
        if not spec:
            pytest.fail(
                'the aioq_app fixture needs the app: set aioq_app = "MODULE:APP" in the '
                "pytest configuration ([tool.pytest.ini_options] in pyproject.toml), or "
                "override the aioq_app fixture",
                pytrace=False,
            )
        try:
            app = load_app(spec)
        except CliError as exc:
            pytest.fail(f"aioq_app = {spec!r}: {exc}", pytrace=False)
        async with isolated(app, aioq_redis_url) as bound:
            yield bound
