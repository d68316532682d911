"""The web dashboard (``aioq.dashboard``): its JSON API, and the page in a real headless
Chromium (Debian's ``chromium`` driven by Playwright) served by uvicorn in this process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aioq import App, JobCancelled, JobStatus, Worker, current_job
from aioq.dashboard import JOBS_LIMIT, dashboard

from .apps.ops import fixed_key, make_app
from .conftest import unique_name
from .helpers import ROOT

pytestmark = pytest.mark.anyio

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
SCREENSHOT = Path("/tmp/dashboard.png")
JOBS_SCREENSHOT = Path("/tmp/dashboard-jobs.png")


@pytest.fixture
async def ops(redis_url: str) -> AsyncIterator[App]:
    app = make_app(unique_name(), redis_url)

    @app.cron("*/5 * * * *")
    async def nightly_report() -> None:
        pass

    @app.task(retries=1, backoff=0)
    async def flaky() -> str:
        if current_job().attempt == 1:
            raise ConnectionError("the first attempt always fails")
        return "second time lucky"

    yield app
    await app.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve(asgi: Any) -> AsyncIterator[str]:
    """Serve ``asgi`` with uvicorn in this event loop; yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        asgi, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def poison(app: App, *args: Any) -> str:
    """Enqueue ``add`` marked as delivered max_deliveries times: the next start buries it."""
    job = await app.enqueue("add", *args)
    await app.redis.hset(app.keys().job(job.id), "deliveries", app.max_deliveries)
    return job.id


async def retired(app: App) -> str:
    """A job of a task ``app`` does not have (enqueued by an older deploy of the same app):
    a worker of ``app`` fails it and dead-letters it; a retry could only fail again."""
    old = App(app.name, redis_url=app.redis_url)

    @old.task
    async def retired_task() -> None: ...

    try:
        return (await retired_task.enqueue()).id
    finally:
        await old.aclose()


async def drain(app: App) -> None:
    await asyncio.wait_for(Worker(app, burst=True).run(), 20)


# -- the JSON API, without a browser -----------------------------------------------------------


async def test_api_overview_dead_and_actions(ops: App) -> None:
    """The API lists queues, failed jobs and dead letters, and its actions change them."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/queues", dashboard(ops))])
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get("/queues")
        assert r.status_code == 307
        assert r.headers["location"].endswith("/queues/")
        page = await client.get("/queues/")
        assert 'src="static/dashboard.js"' in page.text
        assert (await client.get("/queues/static/dashboard.css")).status_code == 200

        failed = await ops.enqueue("boom", "kaput")
        dead_id = await poison(ops, 1, 2)
        await drain(ops)
        queued = await ops.enqueue("nap", 60)
        overview = (await client.get("/queues/api/overview")).json()
        assert overview["app"] == ops.name
        default = {q["queue"]: q for q in overview["queues"]}["default"]
        assert (default["queued"], default["failed"], default["dead"]) == (1, 2, 1)
        assert [j["id"] for j in overview["failed"]][:2] in (
            [failed.id, dead_id], [dead_id, failed.id]
        )  # fmt: skip
        assert {j["error"] for j in overview["failed"]} >= {"kaput"}
        assert [c["task"] for c in overview["crons"]] == ["nightly_report"]
        assert overview["crons"][0]["last_run"] is None  # a first start only marks its tick
        recent = {j["id"]: j for j in overview["recent"]}  # what the workers finished
        assert set(recent) == {failed.id, dead_id}  # not the queued one
        assert (recent[failed.id]["status"], recent[failed.id]["error"]) == ("failed", "kaput")
        [entry] = (await client.get("/queues/api/dead")).json()["dead"]
        assert entry["job_id"] == dead_id

        r = await client.post(f"/queues/api/dead/{entry['entry']}/requeue")
        assert (r.status_code, r.json()["outcome"]) == (200, "requeued")
        r = await client.post(f"/queues/api/dead/{entry['entry']}/requeue")
        assert (r.status_code, r.json()["outcome"]) == (409, "missing")
        r = await client.post(f"/queues/api/jobs/{queued.id}/cancel")
        assert (r.status_code, r.json()["outcome"]) == (200, "cancelled")
        r = await client.post(f"/queues/api/jobs/{failed.id}/retry")
        assert (r.status_code, r.json()["outcome"]) == (200, "requeued")
        r = await client.post("/queues/api/jobs/nope/retry")
        assert (r.status_code, r.json()["outcome"]) == (409, "missing")
        await ops.redis.set(fixed_key(ops.name), "1")  # the retried job succeeds this time
        await drain(ops)
        assert await ops.job(dead_id).result(timeout=5) == 3
        assert await ops.job(queued.id).status() is JobStatus.CANCELLED
        recent = {j["id"]: j for j in (await client.get("/queues/api/overview")).json()["recent"]}
        retried = recent[failed.id]  # succeeded: no error, the failed attempt is history
        assert (retried["status"], retried["error"], retried["exc_type"]) == (
            "succeeded", None, None
        )  # fmt: skip
        assert retried["result"] == "fixed: kaput"  # the result, not "ok"
        [h] = retried["history"]
        assert (h["attempt"], h["exc_type"], h["error"]) == (1, "ValueError", "kaput")
        assert "traceback" not in h  # listings leave tracebacks to info()

        unknown = await retired(ops)
        await drain(ops)
        assert await ops.job(unknown).status() is JobStatus.FAILED
        r = await client.post(f"/queues/api/jobs/{unknown}/retry")  # would only fail again
        assert (r.status_code, r.json()["outcome"]) == (
            409, f"no task named 'retired_task' in app {ops.name!r}"
        )  # fmt: skip
        assert "retired_task" not in (await client.get("/queues/api/overview")).json()["tasks"]


async def test_api_lists_waiting_jobs_per_queue_and_cancels_them(ops: App) -> None:
    """`api/jobs` lists queued and scheduled jobs of each queue (not finished ones); its
    cancel says what happened: cancelled, finished (nothing changed) or missing."""
    transport = httpx.ASGITransport(app=dashboard(ops))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/api/jobs")).json() == {"limit": JOBS_LIMIT, "jobs": []}
        finished = await ops.enqueue("add", 1, 2)
        await drain(ops)
        queued = await ops.enqueue("add", 2, 3)
        later = await ops.options("nap", delay=60).enqueue(1)
        email = await ops.options("send", priority=4).enqueue("ops@example.com")

        rows = (await client.get("/api/jobs")).json()["jobs"]
        assert [(r["queue"], r["status"]) for r in rows[:2]] in (
            [("default", "queued"), ("default", "scheduled")],
            [("default", "scheduled"), ("default", "queued")],
        )  # one queue's jobs together, newest first (both enqueued within the same ms)
        assert rows[2:] == [
            {
                **rows[2],
                "id": email.id,
                "queue": "emails",
                "task": "send",
                "attempts": 0,
                "priority": 4,
            }
        ]
        assert {r["id"] for r in rows[:2]} == {queued.id, later.id}
        emails = (await client.get("/api/jobs", params={"queue": "emails"})).json()["jobs"]
        assert [r["id"] for r in emails] == [email.id]
        r = await client.get("/api/jobs", params={"queue": "nope"})
        assert (r.status_code, r.json()["error"]) == (400, "unknown queue 'nope'")

        r = await client.post(f"/api/jobs/{later.id}/cancel", params={"queue": "default"})
        assert (r.status_code, r.json()) == (
            200, {"id": later.id, "queue": "default", "outcome": "cancelled"}
        )  # fmt: skip
        r = await client.post(f"/api/jobs/{later.id}/cancel")
        assert (r.status_code, r.json()["outcome"]) == (409, "finished")
        r = await client.post(f"/api/jobs/{finished.id}/cancel")
        assert (r.status_code, r.json()["outcome"]) == (409, "finished")
        r = await client.post("/api/jobs/nope/cancel")
        assert (r.status_code, r.json()["outcome"]) == (409, "missing")
        r = await client.post(f"/api/jobs/{queued.id}/cancel", params={"queue": "nope"})
        assert r.status_code == 400
        assert ops.queues == ["default", "emails"]  # an unknown name is not adopted
        r = await client.post(f"/api/jobs/{queued.id}/cancel")
        assert (r.status_code, r.json()["outcome"]) == (200, "cancelled")

        assert [r["id"] for r in (await client.get("/api/jobs")).json()["jobs"]] == [email.id]
        for job in (queued, later):
            assert await job.status() is JobStatus.CANCELLED
            with pytest.raises(JobCancelled):
                await job.result(timeout=5)


async def test_api_says_when_redis_does_not_answer(tmp_path: Path) -> None:
    app = App(unique_name(), redis_url=f"unix://{tmp_path}/none.sock")
    transport = httpx.ASGITransport(app=dashboard(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get("/api/overview")
    await app.aclose()
    assert r.status_code == 503
    assert "cannot reach Redis" in r.json()["error"]


# -- the page in a real browser ----------------------------------------------------------------


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)"
)
async def test_page_shows_a_job_and_requeues_a_dead_one(ops: App) -> None:
    """Load the page, see an enqueued job counted, click Requeue on a dead letter, and see
    the job succeed."""
    from playwright.async_api import async_playwright, expect

    await ops.set_rate_limit("send", "10/s")
    async with serve(dashboard(ops)) as url, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 1100})
            await page.goto(url + "/")
            queued = page.locator('[data-queue="default"] [data-stat="queued"] .n')
            await expect(queued).to_have_text("0")
            await ops.enqueue("add", 1, 1)
            await expect(queued).to_have_text("1")  # a job appears

            await ops.enqueue("boom", "the payment provider said no")
            lucky = await ops.enqueue("flaky")
            unknown = await retired(ops)
            dead_id = await poison(ops, 20, 22)
            worker = Worker(ops)
            running = asyncio.create_task(worker.run())
            try:
                row = page.locator(f'#dead tr[data-job="{dead_id}"]')
                await expect(page.locator("#dead tbody tr")).to_have_count(2)
                await expect(row).to_contain_text("poison")
                await expect(page.locator("#failed")).to_contain_text("payment provider")
                unknown_row = page.locator(f'#failed tr[data-job="{unknown}"]')
                await expect(unknown_row).to_contain_text("unknown task")  # no Retry for it
                await expect(unknown_row.locator("button")).to_have_count(0)
                await expect(page.locator("#failed button.retry").first).to_be_visible()
                # what needs an operator comes before the workers and jobs tables
                failed_y = (await page.locator("#failed").bounding_box() or {})["y"]
                dead_y = (await page.locator("#dead").bounding_box() or {})["y"]
                workers_y = (await page.locator("#workers").bounding_box() or {})["y"]
                assert failed_y < dead_y < workers_y
                assert dead_y < 1100  # above the fold of the 1100 px viewport
                await expect(page.locator("#workers tbody")).to_contain_text(worker.consumer)
                await expect(queued).to_have_text("0")
                await expect(page.locator("#throughput svg rect").first).to_be_visible()
                recent = page.locator("#recent")
                await expect(recent.locator('tr[data-status="succeeded"]').first).to_be_visible()
                await expect(recent).to_contain_text("payment provider")
                # succeeded on its second attempt: green, no error, the failure as a note
                lucky_row = recent.locator(f'tr[data-job="{lucky.id}"]')
                await expect(lucky_row).to_have_attribute("data-status", "succeeded")
                await expect(lucky_row).to_contain_text("after 1 failed attempt")
                await expect(lucky_row.locator("td.result")).to_contain_text('"second time lucky"')
                await expect(lucky_row.locator(".error")).to_have_count(0)
                await expect(lucky_row.locator(".history")).to_have_attribute(
                    "title", "attempt 1: ConnectionError: the first attempt always fails"
                )
                await expect(page.locator("#crons")).to_contain_text("never ran")
                await page.screenshot(path=str(SCREENSHOT), full_page=True)

                await row.locator("button.requeue").click()
                await expect(page.locator("#toasts")).to_contain_text("requeued")
                await expect(row).to_have_count(0)
                assert await ops.job(dead_id).result(timeout=10) == 42  # it succeeded
                info = await ops.job(dead_id).info()
                assert info.status is JobStatus.SUCCEEDED
                left = page.locator("#dead tbody tr")  # the unknown task's: no Requeue either
                await expect(left).to_have_count(1)
                await expect(left).to_contain_text("unknown task")
                await expect(left.locator("button")).to_have_count(0)
            finally:
                worker.stop()
                await asyncio.wait_for(running, 20)
        finally:
            await browser.close()


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)"
)
async def test_page_cancels_a_running_job_and_a_scheduled_one(ops: App) -> None:
    """A running job (with its progress) and a scheduled one appear in the Jobs table; Cancel
    ends each one cancelled (a running job's status turns cancelled only once its worker has
    stopped the coroutine)."""
    from playwright.async_api import async_playwright, expect

    running = await ops.enqueue("steps", 2, 60)  # reports step 1 of 2, then sleeps a minute
    scheduled = await ops.options("nap", delay=60).enqueue(1)
    async with serve(dashboard(ops)) as url, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        worker = Worker(ops)
        working = asyncio.create_task(worker.run())
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 1100})
            await page.goto(url + "/")
            running_row = page.locator(f'#jobs tr[data-job="{running.id}"]')
            scheduled_row = page.locator(f'#jobs tr[data-job="{scheduled.id}"]')
            await expect(running_row).to_have_attribute("data-status", "running")
            await expect(running_row).to_contain_text("1 / 2")  # its progress
            await expect(scheduled_row).to_have_attribute("data-status", "scheduled")
            await expect(scheduled_row.locator("td.due")).to_have_text(
                re.compile(r"^in \d+s · delay$")
            )
            await page.screenshot(path=str(JOBS_SCREENSHOT), full_page=True)

            for job, row in ((running, running_row), (scheduled, scheduled_row)):
                await row.locator("button.cancel").click()
                toast = page.locator("#toasts .toast").filter(has_text=job.id[:12])
                await expect(toast).to_have_text(f"cancel {job.id[:12]}…: cancelled")
                await expect(row).to_have_count(0)
                assert await job.status() is JobStatus.CANCELLED
                with pytest.raises(JobCancelled):
                    await job.result(timeout=5)
            await expect(page.locator("#jobs")).to_contain_text("No queued, scheduled or")
        finally:
            worker.stop()
            await asyncio.wait_for(working, 20)
            await browser.close()


# -- `aioq dashboard` ------------------------------------------------------------------------


async def test_dashboard_command_serves_the_page_and_the_api(ops: App) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIOQ_REDIS_URL": ops.redis_url,
           "AIOQ_APP_NAME": ops.name}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aioq", "dashboard", "tests.apps.ops:app", "--port", str(port),
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        await ops.enqueue("send", "ops@example.com")
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            while True:
                try:
                    r = await client.get("/api/overview")
                    break
                except httpx.ConnectError:
                    assert proc.returncode is None, await proc.communicate()
                    assert time.monotonic() < deadline, "aioq dashboard did not start"
                    await asyncio.sleep(0.1)
            assert r.status_code == 200
            body = r.json()
            assert body["app"] == ops.name
            assert {q["queue"]: q["queued"] for q in body["queues"]}["emails"] == 1
            assert "dashboard.js" in (await client.get("/")).text
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.communicate(), 10)


def test_dashboard_command_says_what_is_missing() -> None:
    """Without the dashboard extra the command fails in one line, exit code 2."""
    code = (
        "import sys; sys.modules['uvicorn'] = None; sys.argv = ['aioq', 'dashboard', "
        "'tests.apps.ops:app']; from aioq.__main__ import main; main()"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "aioq: the dashboard needs uvicorn: pip install 'aioq-redis[dashboard]'"
    ), r.stderr


def test_throughput_counts_what_each_worker_finished_between_readings() -> None:
    """Deltas of each worker's total go into 10 s buckets; a restart never shows as a burst."""
    from aioq.dashboard.throughput import Throughput

    now = [1000.0]
    t = Throughput(clock=lambda: now[0])
    t.add([{"consumer": "a", "done": 100}])  # first sighting: counts from here
    now[0] = 1004.0
    t.add([{"consumer": "a", "done": 150}, {"consumer": "b", "done": 7}])
    now[0] = 1012.0
    t.add([{"consumer": "a", "done": 3}, {"consumer": "b", "done": 27}])  # a restarted
    assert t.series() == [{"t": 1000.0, "rate": 5.0}, {"t": 1010.0, "rate": 2.0}]
    now[0] = 1700.0
    t.add([])
    assert t.series() == [{"t": 1700.0, "rate": 0.0}]  # older than 10 minutes: dropped
