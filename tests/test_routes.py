"""Routing (``App(routes=...)``, Celery's ``task_routes``): a task without an explicit queue
goes to the first route its name matches (shell-style patterns), else the default queue; an
explicit queue wins; a producer that knows a task only by name routes it the same way; a
worker started for the app (``Worker(app)``, ``aioq worker``) serves the routed queues; bad
patterns and queues are refused at ``App()`` naming them. Real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aioq import App, Worker
from tests.helpers import Spawned

pytestmark = pytest.mark.anyio

ROUTES = {"emails.*": "emails", "reports.build": "slow", "reports.*": "reports", "x?[ab]": "xq"}


def test_first_matching_route_wins_and_explicit_queues_win() -> None:
    app = App("routes", routes=ROUTES)

    @app.task(name="emails.send.bulk")
    async def bulk() -> None: ...

    @app.task(name="reports.build")
    async def build() -> None: ...

    @app.task(name="reports.daily")
    async def daily() -> None: ...

    @app.task(name="xya")
    async def xya() -> None: ...

    @app.task(name="emails.pinned", queue="high")
    async def pinned() -> None: ...

    @app.task
    async def unrouted() -> None: ...

    @app.cron(every=60)
    async def reports_tick() -> None: ...  # its name does not match "reports.*"

    assert (bulk.queue, build.queue, daily.queue, xya.queue) == ("emails", "slow", "reports", "xq")
    assert (pinned.queue, unrouted.queue, reports_tick.queue) == ("high", "default", "default")
    assert app.route("Emails.send") == "default"  # case-sensitive
    assert bulk.options(queue="other").call().queue == "other"


async def test_a_producer_without_the_tasks_routes_by_name(redis_url: str) -> None:
    producer = App("r-prod", redis_url=redis_url, routes=ROUTES)
    try:
        job = await producer.enqueue("emails.send", "a@b")
        assert job.queue == "emails"
        assert await producer.redis.xlen(producer.keys("emails").stream) == 1
        other = await producer.enqueue("misc", 1)
        assert other.queue == "default"
    finally:
        await producer.redis.delete(*[k async for k in producer.redis.scan_iter("aioq:{r-prod*")])
        await producer.aclose()


def test_workers_serve_the_routed_queues() -> None:
    app = App("r-workers", routes={"emails.*": "emails", "reports.build": "slow"})
    assert app.queues == ["default", "emails", "slow"]
    assert [k.queue for k in Worker(app).queue_keys] == ["default", "emails", "slow"]


@pytest.fixture
def spawned() -> Iterator[Spawned]:
    s = Spawned()
    yield s
    s.close()


async def test_a_worker_process_runs_jobs_routed_by_a_producer(
    app: App, spawned: Spawned, redis_url: str
) -> None:
    """A producer that knows no tasks, with the same routes, enqueues by name; an ``aioq
    worker`` process started for tests/apps/flowctl.py (no --queue) runs them from the
    routed queues."""
    producer = App(
        app.name, redis_url=redis_url, routes={"emails.*": "emails", "reports.build": "slow"}
    )
    spawned.start("tests.apps.flowctl:app", redis_url, {"AIOQ_TEST_APP": app.name})
    try:
        a = await producer.enqueue("emails.send", "x@y")
        b = await producer.enqueue("reports.build", 21)
        assert (a.queue, b.queue) == ("emails", "slow")
        assert await a.result(timeout=15) == "sent to x@y"
        assert await b.result(timeout=15) == 42
    finally:
        await producer.aclose()


@pytest.mark.parametrize(
    ("routes", "error", "message"),
    [
        ({r"emails\..*": "emails"}, ValueError, "route pattern 'emails\\\\..*' uses '\\\\'"),
        ({"^emails": "emails"}, ValueError, "not regular expressions"),
        ({"(a|b)": "q"}, ValueError, "route pattern '(a|b)' uses '()|'"),
        ({"emails.[ab": "emails"}, ValueError, "'emails.[ab' has a '[' that is never closed"),
        ({"": "q"}, ValueError, "route pattern must not be empty"),
        ({"emails.*": "bad queue"}, ValueError, "route 'emails.*': queue name 'bad queue'"),
        ({"emails.*": "a{b}"}, ValueError, "route 'emails.*': queue name 'a{b}'"),
        ({"emails.*": {"queue": "emails"}}, TypeError, "route 'emails.*': the queue must be"),
        ({5: "q"}, TypeError, "route pattern must be a str, got 5"),
        ([("a", "b")], TypeError, "routes must be a mapping"),
    ],
)
def test_bad_routes_are_refused_at_app(
    routes: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as exc:
        App("x", routes=routes)  # type: ignore[arg-type]
    assert message in str(exc.value)


def test_routes_and_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOQ_ROUTES", "emails.*=emails, reports.build=slow")
    monkeypatch.setenv("AIOQ_QUEUE_LIMITS", "emails=10000")
    app = App.from_env(name="r-env")
    assert app.routes.table == {"emails.*": "emails", "reports.build": "slow"}
    assert app.queue_limits == {"emails": 10_000}
    monkeypatch.setenv("AIOQ_ROUTES", "emails.+=emails")
    with pytest.raises(ValueError, match=r"AIOQ_ROUTES='emails.\+=emails': route pattern"):
        App.from_env(name="r-env")
