"""The examples run as documented: FastAPI and aiohttp apps with the worker in their lifespan,
the embedded-worker script, the WSGI app enqueueing from threads, and ``aioq worker
examples.tasks:app``, each against real Redis."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import anyio
import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from aioq import Worker

from .conftest import unique_name
from .helpers import ROOT

pytestmark = pytest.mark.anyio

SCRIPT = ROOT / "examples" / "embedded_worker.py"


def _forget_examples() -> None:
    for name in [m for m in sys.modules if m.partition(".")[0] == "examples"]:
        del sys.modules[name]


@pytest.fixture
async def shop(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """The examples' settings, as in production: Redis and app name from the environment.

    The examples read both when imported, so each test imports them afresh under a unique
    app name (which isolates its keys) and forgets them afterwards.
    """
    name = unique_name("shop")
    monkeypatch.setenv("AIOQ_REDIS_URL", redis_url)
    monkeypatch.setenv("AIOQ_APP_NAME", name)
    _forget_examples()
    yield name
    tasks = sys.modules.get("examples.tasks")
    if tasks is not None:
        await tasks.app.aclose()  # a no-op when the example closed it already
    _forget_examples()


def _example(name: str) -> ModuleType:
    return importlib.import_module(f"examples.{name}")


def _receipt(job_id: str, item: str, quantity: int, total_cents: int) -> dict[str, object]:
    return {"order_id": job_id, "item": item, "quantity": quantity, "total_cents": total_cents}


async def test_fastapi_order_is_run_by_the_lifespan_worker(shop: str, redis_url: str) -> None:
    """An order posted to the FastAPI app is run by the lifespan's worker; both job endpoints
    report its receipt."""
    example = _example("fastapi_app")
    assert (example.queue_app.name, example.queue_app.redis_url) == (shop, redis_url)
    api = example.app
    transport = httpx.ASGITransport(app=api)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client,
    ):
        posted = await client.post("/orders", json={"item": "book", "quantity": 2})
        assert posted.status_code == 202
        job_id = posted.json()["job_id"]

        waited = await client.get(f"/jobs/{job_id}/result", params={"timeout": 5})
        assert waited.status_code == 200
        assert waited.json() == _receipt(job_id, "book", 2, 2500)

        snapshot = await client.get(f"/jobs/{job_id}")
        assert snapshot.status_code == 200
        assert snapshot.json() == {
            "id": job_id,
            "status": "succeeded",
            "attempts": 1,
            "result": _receipt(job_id, "book", 2, 2500),
            "error": None,
        }


async def test_fastapi_reports_failed_and_unknown_jobs(shop: str) -> None:
    """A task that raises surfaces as 422 with its message and status "failed"; unknown job
    ids are 404; an invalid order is rejected before anything is enqueued."""
    api = _example("fastapi_app").app
    transport = httpx.ASGITransport(app=api)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client,
    ):
        posted = await client.post("/orders", json={"item": "piano", "quantity": 1})
        job_id = posted.json()["job_id"]

        waited = await client.get(f"/jobs/{job_id}/result", params={"timeout": 5})
        assert waited.status_code == 422
        assert "no such item: 'piano'" in waited.json()["detail"]

        snapshot = (await client.get(f"/jobs/{job_id}")).json()
        assert (snapshot["status"], snapshot["result"]) == ("failed", None)
        assert "no such item: 'piano'" in snapshot["error"]

        assert (await client.get("/jobs/no-such-job")).status_code == 404
        assert (await client.get("/jobs/no-such-job/result")).status_code == 404
        invalid = await client.post("/orders", json={"item": "book", "quantity": 0})
        assert invalid.status_code == 422


async def test_aiohttp_order_is_run_by_the_cleanup_ctx_worker(shop: str) -> None:
    """An order posted to the aiohttp app (a real server on a loopback port) is run by the
    worker started in cleanup_ctx; failures and bad requests map to 422 and 400."""
    example = _example("aiohttp_app")
    async with TestClient(TestServer(example.create_app())) as client:
        posted = await client.post("/orders", json={"item": "mug", "quantity": 3})
        assert posted.status == 202
        job_id = (await posted.json())["job_id"]

        waited = await client.get(f"/jobs/{job_id}/result", params={"timeout": "5"})
        assert waited.status == 200
        assert await waited.json() == _receipt(job_id, "mug", 3, 2400)

        posted = await client.post("/orders", json={"item": "piano", "quantity": 1})
        failed_id = (await posted.json())["job_id"]
        failed = await client.get(f"/jobs/{failed_id}/result", params={"timeout": "5"})
        assert failed.status == 422
        body = await failed.json()
        assert body["type"] == "LookupError"
        assert "no such item: 'piano'" in body["error"]

        assert (await client.post("/orders", json={"item": "mug"})).status == 400
        assert (await client.get("/jobs/no-such-job/result")).status == 404


async def test_tasks_module_runs_under_the_cli_worker(shop: str) -> None:
    """`aioq worker examples.tasks:app --burst` runs a job the examples enqueued, then exits 0."""
    tasks = _example("tasks")
    job = await tasks.place_order.enqueue("lamp", 1)
    done = await anyio.run_process(
        [sys.executable, "-W", "error", "-m", "aioq", "worker", "examples.tasks:app",
         "--burst", "--log-level", "warning"],
        cwd=ROOT,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert await job.result(timeout=1) == _receipt(job.id, "lamp", 1, 3000)


def _wsgi(
    application: object, method: str, path: str, body: object = None, query: str = ""
) -> tuple[int, object]:
    """One request through a WSGI callable, as a server's worker thread makes it."""
    data = b"" if body is None else json.dumps(body).encode()
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data),
    }  # fmt: skip
    status: list[str] = []
    out = b"".join(application(environ, lambda s, _h: status.append(s)))  # type: ignore[operator]
    return int(status[0].split()[0]), json.loads(out)


async def test_wsgi_app_enqueues_from_threads_without_an_event_loop(shop: str) -> None:
    """The WSGI example's handlers run in 8 threads (as a threaded server runs them) and
    enqueue with enqueue_sync; a worker runs the orders; the result and status endpoints
    block on SyncJob; a failed order is 422, an unknown job 404, a bad body 400."""
    example, tasks = _example("sync_producer"), _example("tasks")
    wsgi = example.application
    orders = [{"item": "book", "quantity": n} for n in range(1, 25)]

    def post_all() -> list[tuple[int, object]]:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda o: _wsgi(wsgi, "POST", "/orders", o), orders))

    posted = await anyio.to_thread.run_sync(post_all)
    assert {status for status, _ in posted} == {202}
    ids = [body["job_id"] for _, body in posted]  # type: ignore[index]
    assert await anyio.to_thread.run_sync(_wsgi, wsgi, "GET", f"/jobs/{ids[0]}") == (
        200, {"id": ids[0], "status": "queued"},
    )  # fmt: skip
    failed_id = (await anyio.to_thread.run_sync(
        _wsgi, wsgi, "POST", "/orders", {"item": "piano", "quantity": 1}
    ))[1]["job_id"]  # type: ignore[index]  # fmt: skip

    def results() -> list[tuple[int, object]]:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(
                lambda i: _wsgi(wsgi, "GET", f"/jobs/{i}/result", query="timeout=10"), ids
            ))  # fmt: skip

    async with Worker(tasks.app):
        got = await anyio.to_thread.run_sync(results)
        failed = await anyio.to_thread.run_sync(
            _wsgi, wsgi, "GET", f"/jobs/{failed_id}/result", None, "timeout=10"
        )
    assert got == [(200, _receipt(i, "book", o["quantity"], 1250 * o["quantity"]))
                   for i, o in zip(ids, orders, strict=True)]  # type: ignore[operator]  # fmt: skip
    assert failed[0] == 422
    assert "no such item: 'piano'" in failed[1]["error"]  # type: ignore[index]
    assert (await anyio.to_thread.run_sync(_wsgi, wsgi, "GET", "/jobs/nope"))[0] == 404
    assert (await anyio.to_thread.run_sync(_wsgi, wsgi, "POST", "/orders", {"item": 1}))[0] == 400
    tasks.app.close()


EXPECTED_SCRIPT_OUTPUT = [
    "add(2, 3) = 5",
    f"fingerprint('aioq') = {hashlib.sha256(b'aioq').hexdigest()[:16]}",
    "fetch_page(...) = https://example.com fetched on attempt 2",
    "fetch_page: succeeded after 2 attempts",
]


async def test_embedded_worker_script_uses_aioq_redis_url(redis_url: str) -> None:
    """The script runs its async, sync and retrying current_job() tasks against the Redis in
    AIOQ_REDIS_URL, prints their results, leaks nothing, and exits 0."""
    env = {**os.environ, "AIOQ_REDIS_URL": redis_url, "AIOQ_APP_NAME": unique_name("emb")}
    done = await anyio.run_process(
        [sys.executable, "-W", "error", str(SCRIPT)], cwd=ROOT, env=env, check=False
    )
    assert (done.returncode, done.stderr.decode()) == (0, "")
    assert done.stdout.decode().splitlines() == EXPECTED_SCRIPT_OUTPUT


async def test_embedded_worker_script_starts_its_own_redis_without_a_url() -> None:
    """Without AIOQ_REDIS_URL the script starts a private redis-server, so it runs on a fresh
    machine."""
    assert "AIOQ_REDIS_URL" not in os.environ  # removed by conftest for every test
    done = await anyio.run_process(
        [sys.executable, "-W", "error", str(SCRIPT)], cwd=ROOT, check=False
    )
    assert (done.returncode, done.stderr.decode()) == (0, "")
    first, *rest = done.stdout.decode().splitlines()
    assert first.startswith("(no AIOQ_REDIS_URL: started a private redis-server at unix://")
    assert rest == EXPECTED_SCRIPT_OUTPUT


async def test_readme_quickstart_is_the_tested_file_and_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README's first FastAPI example is examples/quickstart.py verbatim; a request
    enqueues a job that a worker runs, and the status endpoint follows it to its result."""
    source = (ROOT / "examples" / "quickstart.py").read_text()
    assert f"```python\n{source}```" in (ROOT / "README.md").read_text()
    from aioq.embedded import EmbeddedRedis

    # its app name is the fixed "shop": a private Redis keeps it apart from other tests
    with EmbeddedRedis() as server:
        monkeypatch.setenv("AIOQ_REDIS_URL", server.url)
        sys.modules.pop("examples.quickstart", None)
        example = _example("quickstart")
        try:
            api = example.api
            transport = httpx.ASGITransport(app=api)
            async with (
                api.router.lifespan_context(api),
                httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client,
            ):
                posted = await client.post("/orders/7/receipt", params={"email": "a@b.c"})
                assert posted.status_code == 202
                job_id = posted.json()["job_id"]
                assert (await client.get(f"/jobs/{job_id}")).json() == {"status": "queued"}
                async with Worker(example.queue):
                    await example.send_receipt.job(job_id).result(timeout=5)
                assert (await client.get(f"/jobs/{job_id}")).json() == {
                    "status": "succeeded",
                    "result": "receipt for order 7 sent to a@b.c",
                    "error": None,
                }
                assert (await client.get("/jobs/no-such-job")).status_code == 404
        finally:
            await example.queue.aclose()
            sys.modules.pop("examples.quickstart", None)


async def test_celery_migration_aioq_side_runs_as_the_celery_one_would(redis_url: str) -> None:
    """The aioq version of the Celery project: routes, autoretry on ConnectionError only,
    a delayed urgent reminder, the beat schedule as a cron, and the status endpoint."""
    from aioq import JobStatus, TaskFailed
    from aioq.testing import drain, isolated, queued
    from examples.celery_migration import aioq_version as newsletter

    async with isolated(newsletter.app, redis_url) as app:
        welcome = await newsletter.signup("flaky@example.com")
        refused = await newsletter.signup("nobody")
        later = await newsletter.reminder("ann@example.com")
        assert (welcome.queue, later.queue) == ("emails", "emails")  # task_routes
        assert await newsletter.outcome(welcome.id) == {"state": JobStatus.QUEUED}
        with pytest.raises(TaskFailed, match="not an email address: 'nobody'"):
            await drain(app)
        sent = "'welcome' sent to flaky@example.com on attempt 2"  # MailServerDown retried
        assert await welcome.result(timeout=1) == sent
        assert await newsletter.outcome(welcome.id) == {
            "state": JobStatus.SUCCEEDED,
            "result": sent,
        }
        failed = await newsletter.outcome(refused.id)  # ValueError: failed at once
        assert failed["state"] is JobStatus.FAILED
        assert "ValueError: not an email address" in failed["traceback"]
        assert (await refused.info()).attempts == 1
        [waiting] = await queued(app, task=newsletter.send_email)
        assert (waiting.id, waiting.args, waiting.priority) == (
            later.id,
            ["ann@example.com", "reminder"],
            9,
        )
        assert waiting.wait_reason == "delay"
        report = await newsletter.build_report.enqueue("2026-01-01")
        await drain(app)
        assert (report.queue, await report.result(timeout=1)) == (
            "reports",
            {"day": "2026-01-01", "sent": 0},
        )
        assert [(c.task, c.expression) for c in app.crons] == [("morning_digest", "0 7 * * *")]
