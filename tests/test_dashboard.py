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

from aioq import App, JobCancelled, JobStatus, Worker, chord, current_job, views
from aioq.dashboard import JOBS_LIMIT, dashboard
from aioq.keys import THROUGHPUT_BUCKET, THROUGHPUT_WINDOW, throughput_key, workers_key
from aioq.worker.heartbeat import HEARTBEAT

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
TPUT_SCREENSHOT = Path("/tmp/tput.png")  # the first load, after workers finished 30 jobs
FLOW_SCREENSHOT = Path("/tmp/dashboard-workflow.png")  # a chord's callback opened


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

    @app.task
    async def tsum(values: list[int]) -> int:
        return sum(values)

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


async def finish(app: App, n: int, workers: int = 2) -> None:
    """Enqueue ``n`` jobs and let ``workers`` burst workers finish them together."""
    await app.enqueue_many([app.tasks["add"].call(i, 1) for i in range(n)])
    runs = [Worker(app, burst=True, concurrency=4).run() for _ in range(workers)]
    await asyncio.wait_for(asyncio.gather(*runs), 20)


async def test_api_throughput_is_what_the_workers_heartbeats_counted(ops: App) -> None:
    """Jobs finished by two workers, read by a dashboard of a new App: every 10 s bucket of the
    last 10 minutes, oldest first, zeros where nothing ran, the jobs summing to those finished
    (the workers' last beats, after their last results, count the rest)."""
    await finish(ops, 37)
    fresh = make_app(ops.name, ops.redis_url)  # nothing in this process has seen a worker
    transport = httpx.ASGITransport(app=dashboard(fresh))
    before, _ = await ops.redis.time()
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        series = (await client.get("/api/overview")).json()["throughput"]
    after, _ = await ops.redis.time()
    await fresh.aclose()
    assert len(series) == THROUGHPUT_WINDOW // THROUGHPUT_BUCKET
    assert [p["t"] for p in series] == list(
        range(series[0]["t"], series[0]["t"] + THROUGHPUT_WINDOW, THROUGHPUT_BUCKET)
    )
    assert before - before % THROUGHPUT_BUCKET <= series[-1]["t"] <= after  # the current one
    assert sum(p["jobs"] for p in series) == 37
    assert sum(p["rate"] > 0 for p in series) in (1, 2)  # this bucket, or also the one before
    for p in series[:-1]:
        assert (p["seconds"], p["rate"]) == (THROUGHPUT_BUCKET, p["jobs"] / THROUGHPUT_BUCKET)
    # the current bucket: over the part of it that has passed (at least a heartbeat interval)
    last = series[-1]
    assert 0 <= last["seconds"] <= THROUGHPUT_BUCKET
    assert last["rate"] == pytest.approx(last["jobs"] / max(last["seconds"], HEARTBEAT))


async def test_throughput_buckets_older_than_the_window_are_pruned(ops: App) -> None:
    """A beat drops the buckets that began a window or more before its own, and the view shows
    no others; the hash expires a bucket after the window."""
    key = throughput_key(ops.name)
    secs, _ = await ops.redis.time()
    now = secs - secs % THROUGHPUT_BUCKET
    seeded = range(now - THROUGHPUT_WINDOW - 100, now, THROUGHPUT_BUCKET)  # 70 buckets, 1 job each
    await ops.redis.hset(key, mapping={str(t): 1 for t in seeded})
    keys = (workers_key(ops.name), key)
    beat = await ops.scripts.heartbeat(keys, "w:1:a", b'{"done": 5}', 60, 5, 0) // 1000
    bucket = beat - beat % THROUGHPUT_BUCKET
    kept = {t for t in seeded if t > bucket - THROUGHPUT_WINDOW}
    assert {int(t) for t in await ops.redis.hkeys(key)} == kept | {bucket}
    assert len(kept | {bucket}) == THROUGHPUT_WINDOW // THROUGHPUT_BUCKET
    assert 0 < await ops.redis.ttl(key) <= THROUGHPUT_WINDOW + THROUGHPUT_BUCKET
    series = await views.throughput(ops)  # (a bucket later, should one have begun since)
    first = series[0]["t"]
    assert first > bucket - THROUGHPUT_WINDOW
    assert sum(p["jobs"] for p in series) == sum(t >= first for t in kept) + 5


async def test_a_heartbeat_sent_twice_counts_its_jobs_once(ops: App) -> None:
    """The jobs since the previous beat come from the worker's entry in Redis: a beat resent
    after its reply was lost (the worker still holds its old acknowledged total) adds nothing;
    without an entry (the first beat) the worker's acknowledged total is the base."""
    keys = (workers_key(ops.name), throughput_key(ops.name))
    stats = b'{"done": 7}'
    await ops.scripts.heartbeat(keys, "w:1:a", stats, 60, 7, 3)  # no entry: 7 - 3
    await ops.scripts.heartbeat(keys, "w:1:a", stats, 60, 7, 3)  # resent: its entry says 7
    await ops.scripts.heartbeat(keys, "w:1:a", b"", 60, 9, 3)  # the last beat: 9 - 7, removed
    assert await ops.redis.hkeys(keys[0]) == []
    assert sum(p["jobs"] for p in await views.throughput(ops)) == 4 + 2


# -- the page in a real browser ----------------------------------------------------------------


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)"
)
async def test_page_shows_a_job_and_requeues_a_dead_one(ops: App) -> None:
    """Load the page after workers finished jobs and see them in the throughput chart at
    once, see an enqueued job counted, click Requeue on a dead letter, and see the job
    succeed."""
    from playwright.async_api import Route, async_playwright, expect

    await ops.set_rate_limit("send", "10/s")
    await finish(ops, 30)
    async with serve(dashboard(ops)) as url, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 1100})
            first_drawn, polls = asyncio.Event(), []

            async def hold_later_polls(route: Route) -> None:
                polls.append(route.request.url)
                if len(polls) > 1:  # what is checked below is the first answer's drawing
                    await first_drawn.wait()
                await route.continue_()

            await page.route("**/api/overview", hold_later_polls)
            await page.goto(url + "/")
            bars = page.locator("#throughput svg rect")
            await expect(bars).to_have_count(THROUGHPUT_WINDOW // THROUGHPUT_BUCKET)
            titles = await bars.evaluate_all("rs => rs.map((r) => r.textContent)")
            assert sum(int(t.split(" jobs")[0]) for t in titles) == 30  # e.g. "30 jobs, 3.0/s…"
            heights = await bars.evaluate_all("rs => rs.map((r) => +r.getAttribute('height'))")
            assert max(heights) > 1  # a bar of jobs (zeros are 1 px lines)
            await page.screenshot(path=str(TPUT_SCREENSHOT), full_page=True)
            first_drawn.set()
            await page.unroute("**/api/overview")
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

                # a workflow's job opens as the workflow's steps, each opening its own view
                add, tsum = ops.tasks["add"], ops.tasks["tsum"]
                flow = await chord([add.s(i, i) for i in range(3)], tsum.s()).enqueue()
                assert await flow.result(timeout=10) == 6
                await recent.locator(f'tr[data-job="{flow.id}"] a.jobref').click()
                steps = page.locator("#detail #steps tbody tr")
                await expect(steps).to_have_count(5)  # the group, its 3 members, the callback
                await expect(steps.first).to_contain_text("group of 3")
                await expect(steps.first).to_contain_text("3 / 3 done")
                callback = page.locator(f'#steps tr.this[data-step="{flow.id}"]')
                await expect(callback).to_contain_text("this · result")
                await page.screenshot(path=str(FLOW_SCREENSHOT))
                member = await steps.nth(1).get_attribute("data-step")
                await steps.nth(1).locator("a.jobref").click()
                await expect(page.locator("#detail-title")).to_contain_text(f"Job {member}")
                await expect(page.locator(f'#steps tr.this[data-step="{member}"]')).to_be_visible()
                await page.keyboard.press("Escape")
                await expect(page.locator("#detail")).to_be_hidden()
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
    """A dashboard process started after the workers stopped shows what they finished in its
    first answer: the throughput is in Redis, not in a dashboard's memory."""
    await finish(ops, 12)
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
            assert sum(p["jobs"] for p in body["throughput"]) == 12
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
