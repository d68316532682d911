"""The operations surface: `aioq info/jobs/job/dlq/cancel/retry/purge/pause/resume/enqueue`,
the failed-jobs index, worker heartbeats and `job.progress()`, against a real redis-server.

CLI commands run as subprocesses (``aioq(...)``); while an in-process worker runs they are
started from a thread, so the worker's event loop keeps running.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import orjson
import pytest

from aioq import App, JobNotFound, JobStatus, Worker
from aioq import ops as aioq_ops
from aioq import views as aioq_views
from aioq.keys import workers_key
from aioq.worker.fetch import BLOCK_MS

from .apps.ops import fixed_key, make_app
from .conftest import unique_name
from .helpers import ROOT

pytestmark = pytest.mark.anyio

TARGET = "tests.apps.ops:app"


def aioq(
    *args: str, app: App, input: str | None = None, timeout: float = 60, columns: int = 200
) -> subprocess.CompletedProcess[str]:
    """Run ``aioq ARGS`` against ``app``'s Redis, with ``app``'s name for tests.apps.ops."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIOQ_REDIS_URL": app.redis_url,
           "AIOQ_APP_NAME": app.name, "COLUMNS": str(columns)}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "aioq", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        input=input, stdin=None if input is not None else subprocess.DEVNULL,
    )  # fmt: skip


def aioq_json(*args: str, app: App) -> Any:
    r = aioq(*args, "--json", app=app)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


async def in_thread(*args: str, app: App) -> subprocess.CompletedProcess[str]:
    """``aioq(...)`` without blocking the event loop (an in-process worker keeps running)."""
    return await anyio.to_thread.run_sync(lambda: aioq(*args, app=app))


@pytest.fixture
async def ops(redis_url: str) -> AsyncIterator[App]:
    """The tests.apps.ops app under a unique name, in this process."""
    app = make_app(unique_name(), redis_url)
    yield app
    await app.aclose()


async def drain(app: App) -> None:
    """Run a burst worker until every queue is empty."""
    await asyncio.wait_for(Worker(app, burst=True).run(), 20)


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def poison(app: App, *args: Any) -> str:
    """Enqueue ``add`` and mark it delivered max_deliveries times: the next start buries it."""
    job = await app.enqueue("add", *args)
    await app.redis.hset(app.keys().job(job.id), "deliveries", app.max_deliveries)
    return job.id


# -- failed-jobs index, jobs, job --------------------------------------------------------------


async def test_failed_index_lists_failures_newest_first(ops: App) -> None:
    """`aioq jobs --status failed` lists failed jobs from the index, newest failure first."""
    first = await ops.enqueue("boom", "one")
    await drain(ops)
    second = await ops.enqueue("boom", "two")
    ok = await ops.enqueue("add", 1, 2)
    await drain(ops)
    assert await ops.redis.zrange(ops.keys().failed, 0, -1) == [
        first.id.encode(), second.id.encode()
    ]  # fmt: skip
    rows = aioq_json("jobs", TARGET, "--status", "failed", app=ops)
    assert [(r["id"], r["error"], r["exc_type"]) for r in rows] == [
        (second.id, "two", "ValueError"), (first.id, "one", "ValueError")
    ]  # fmt: skip
    assert ok.id not in {r["id"] for r in rows}
    assert [r["id"] for r in aioq_json("jobs", TARGET, "--status", "failed", "--limit", "1",
                                       app=ops)] == [second.id]  # fmt: skip
    info = aioq_json("info", TARGET, app=ops)
    assert {q["queue"]: q["failed"] for q in info["queues"]} == {"default": 2, "emails": 0}


async def test_failed_index_drops_failures_older_than_the_result_ttl(redis_url: str) -> None:
    """A new failure trims index entries older than the result TTL (their records expired)."""
    app = make_app(unique_name(), redis_url, result_ttl=1)
    old = await app.enqueue("boom", "old")
    await drain(app)
    assert await app.redis.zcard(app.keys().failed) == 1
    await asyncio.sleep(1.1)
    new = await app.enqueue("boom", "new")
    await drain(app)
    assert await app.redis.zrange(app.keys().failed, 0, -1) == [new.id.encode()]
    with pytest.raises(JobNotFound):
        await old.status()
    await app.aclose()


async def test_jobs_filters_by_status_task_queue_and_limit(ops: App) -> None:
    """`aioq jobs` finds jobs by status, task and queue, at most --limit of them."""
    adds = [await ops.enqueue("add", i, i) for i in range(3)]
    naps = [await ops.options("nap", delay=60).enqueue(1.0) for _ in range(2)]
    mail = await ops.enqueue("send", "a@example.com")
    queued = aioq_json("jobs", TARGET, "--status", "queued", app=ops)
    assert {r["id"] for r in queued} == {j.id for j in adds} | {mail.id}
    assert {r["id"] for r in aioq_json("jobs", TARGET, "--task", "nap", app=ops)} == {
        j.id for j in naps
    }
    assert [r["status"] for r in aioq_json("jobs", TARGET, "--task", "nap", app=ops)] == [
        "scheduled", "scheduled"
    ]  # fmt: skip
    emails = aioq_json("jobs", TARGET, "--queue", "emails", app=ops)
    assert [(r["id"], r["task"], r["queue"]) for r in emails] == [(mail.id, "send", "emails")]
    assert len(aioq_json("jobs", TARGET, "--limit", "2", app=ops)) == 2
    table = aioq("jobs", TARGET, "--status", "scheduled", app=ops)
    assert table.returncode == 0
    assert naps[0].id in table.stdout
    bad = aioq("jobs", TARGET, "--status", "lost", app=ops)
    assert bad.returncode == 2
    assert "unknown status 'lost'" in bad.stderr


async def test_waiting_and_running_listings_read_indexes_not_job_records(ops: App) -> None:
    """Queued jobs come from the streams after the group's last-delivered id, running ones
    from the pending-entries list, scheduled ones from the scheduled set: no SCAN, however
    many finished records are kept."""
    for i in range(5):
        await ops.enqueue("add", i, i)
    await drain(ops)  # five succeeded records, which the listings must not read
    scans = await _scans(ops)
    async with Worker(ops, concurrency=1, queues=["default"]):
        running = await ops.enqueue("nap", 30.0)
        await wait_for(lambda: _status_is(running, JobStatus.RUNNING))
        low = await ops.enqueue("add", 1, 1)
        high = await ops.options("add", priority=7).enqueue(2, 2)
        later = await ops.options("nap", delay=60).enqueue(1.0)
        mail = await ops.enqueue("send", "x@example.com")  # a queue no worker serves
        statuses = {"queued", "running", "scheduled"}
        rows = await aioq_views.list_jobs(ops, status=[JobStatus(s) for s in statuses])
        assert {(r.id, r.status) for r in rows} == {
            (running.id, "running"), (low.id, "queued"), (high.id, "queued"),
            (later.id, "scheduled"), (mail.id, "queued"),
        }  # fmt: skip
        for status, expected in (("running", [running]), ("scheduled", [later])):
            found = await in_thread("jobs", TARGET, "--status", status, "--json", app=ops)
            assert [r["id"] for r in json.loads(found.stdout)] == [j.id for j in expected]
        one = await aioq_views.list_jobs(ops, status=JobStatus.QUEUED, queues=["default"], limit=1)
        assert [r.id for r in one] == [high.id]  # the next to start: highest priority first
        by_task = await aioq_views.list_jobs(ops, status=JobStatus.QUEUED, task="send")
        assert [r.id for r in by_task] == [mail.id]
        assert await _scans(ops) == scans
        assert await running.cancel()


async def _scans(app: App) -> int:
    stats = await app.redis.info("commandstats")
    return int(stats.get("cmdstat_scan", {}).get("calls", 0))


# -- tables a user can copy from and grep -----------------------------------------------------

LONG_ID = "order-2026-11-21-" + "7" * 48
LONG_TASK = "no_such_task_named_at_length_for_the_table_test"


async def _dead_job_with_long_names(app: App) -> None:
    """A dead-letter entry (and a failed job) with a long id and an unknown, long task name."""
    async with App(app.name, redis_url=app.redis_url) as producer:  # knows no tasks
        await producer.options(LONG_TASK, job_id=LONG_ID).enqueue()
    await drain(app)


def _rows_with(text: str, *needles: str) -> list[str]:
    return [line for line in text.splitlines() if all(n in line for n in needles)]


async def test_tables_keep_ids_and_task_names_whole_in_a_pipe(ops: App) -> None:
    """At 80 columns and with stdout not a terminal, each row is one line: the job id and the
    task name appear whole, and grep finds them."""
    await _dead_job_with_long_names(ops)
    for argv in (["dlq", TARGET, "list"], ["jobs", TARGET, "--status", "failed"]):
        r = aioq(*argv, app=ops, columns=80)
        assert r.returncode == 0, r.stderr
        assert len(_rows_with(r.stdout, LONG_ID, LONG_TASK)) == 1, r.stdout
    grep = aioq_piped(["dlq", TARGET, "list"], ["grep", LONG_TASK], app=ops)
    assert LONG_ID in grep
    shown = aioq("job", TARGET, LONG_ID, app=ops, columns=80)
    assert _rows_with(shown.stdout, f"job {LONG_ID}")
    assert _rows_with(shown.stdout, "task", LONG_TASK)


async def test_tables_keep_ids_and_task_names_whole_on_a_narrow_terminal(ops: App) -> None:
    """On an 80-column terminal the reason may wrap, but ids and task names are never wrapped
    or cut: the table grows instead (the terminal wraps the line, not the id)."""
    await _dead_job_with_long_names(ops)
    out = await anyio.to_thread.run_sync(lambda: _on_a_terminal(["dlq", TARGET, "list"], ops))
    assert len(_rows_with(out, LONG_ID, LONG_TASK)) == 1, out
    assert "unknown task" in out


def aioq_piped(argv: list[str], reader: list[str], app: App) -> str:
    """What ``reader`` prints of ``aioq ARGV | READER`` at 80 columns; it must succeed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIOQ_REDIS_URL": app.redis_url,
           "AIOQ_APP_NAME": app.name, "COLUMNS": "80"}  # fmt: skip
    writer = subprocess.Popen(
        [sys.executable, "-m", "aioq", *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    read = subprocess.run(reader, stdin=writer.stdout, capture_output=True, text=True, timeout=60)
    assert writer.stdout is not None
    writer.stdout.close()
    assert writer.wait(60) == 0
    assert read.returncode == 0, read.stderr
    return read.stdout


def _on_a_terminal(argv: list[str], app: App) -> str:
    """What ``aioq ARGV`` writes to an 80-column pseudo-terminal, colours removed."""
    import pty
    import re

    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIOQ_REDIS_URL": app.redis_url,
           "AIOQ_APP_NAME": app.name, "COLUMNS": "80", "LINES": "24", "TERM": "xterm"}  # fmt: skip
    master, slave = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "aioq", *argv], cwd=ROOT, env=env, stdout=slave,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


async def test_job_shows_arguments_error_traceback_and_progress(ops: App) -> None:
    """`aioq job` shows a job's arguments, attempts, times, error with traceback, progress."""
    failed = await ops.enqueue("boom", "kaput")
    done = await ops.options("steps", job_id="steps-1").enqueue(3, pause=0)
    await drain(ops)
    d = aioq_json("job", TARGET, failed.id, app=ops)
    assert (d["task"], d["status"], d["args"], d["attempts"]) == ("boom", "failed", ["kaput"], 1)
    assert (d["error"], d["exc_type"]) == ("kaput", "ValueError")
    assert "raise ValueError(message)" in d["traceback"]
    assert d["enqueued_at"]
    assert d["started_at"]
    assert d["finished_at"]
    d = aioq_json("job", TARGET, "steps-1", app=ops)
    assert (d["status"], d["result"], d["kwargs"]) == ("succeeded", 3, {"pause": 0})
    assert d["progress"] == {"step": 3, "of": 3}
    table = aioq("job", TARGET, failed.id, app=ops)
    assert table.returncode == 0
    assert "ValueError: kaput" in table.stdout
    assert "Traceback" in table.stdout
    assert '{"step":3,"of":3}' in aioq("job", TARGET, done.id, app=ops).stdout
    missing = aioq("job", TARGET, "nope", app=ops)
    assert missing.returncode == 1
    assert "no job 'nope'" in missing.stderr


async def test_job_after_a_retry_shows_the_failure_as_history_not_as_its_error(ops: App) -> None:
    """A failed job an operator retried, which then succeeds, has no error of its own: `aioq
    job` (and --json) show the failed attempt as history, labelled by attempt."""
    failed = await ops.enqueue("boom", "first try")
    await drain(ops)
    assert aioq("retry", TARGET, failed.id, app=ops).returncode == 0
    await ops.redis.set(fixed_key(ops.name), "1")
    await drain(ops)
    assert await failed.result(timeout=5) == "fixed: first try"
    info = await failed.info()
    assert (info.status, info.error, info.traceback) == (JobStatus.SUCCEEDED, None, None)
    assert [(h["attempt"], h["exc_type"], h["error"]) for h in info.history] == [
        (1, "ValueError", "first try")
    ]
    d = aioq_json("job", TARGET, failed.id, app=ops)
    assert (d["status"], d["error"], d["traceback"]) == ("succeeded", None, None)
    [h] = d["history"]
    assert (h["attempt"], h["error"], h["exc_type"]) == (1, "first try", "ValueError")
    assert h["at"].endswith("+00:00")
    assert "raise ValueError(message)" in h["traceback"]
    text = aioq("job", TARGET, failed.id, app=ops).stdout
    assert "attempt 1" in text
    assert "ValueError: first try" in text
    assert "traceback of attempt 1:" in text
    assert "│ error" not in text  # no error row of the job's own


async def test_jobs_and_job_show_when_a_scheduled_job_is_due_and_why(ops: App) -> None:
    """`aioq jobs` has a due column for scheduled jobs, `aioq job` a due line (and --json
    `due_at` and `wait_reason`)."""
    later = await ops.options("add", delay=3600).enqueue(1, 2)
    queued = await ops.enqueue("add", 3, 4)
    due_at = (await later.info()).due_at
    assert due_at is not None
    table = aioq("jobs", TARGET, app=ops).stdout
    [line] = [ln for ln in table.splitlines() if later.id in ln]
    assert f"{due_at:%m-%d %H:%M:%S} (delay)" in line
    [line] = [ln for ln in table.splitlines() if queued.id in ln]
    assert "(delay)" not in line
    rows = {r["id"]: r for r in aioq_json("jobs", TARGET, app=ops)}
    assert (rows[later.id]["wait_reason"], rows[later.id]["due_at"]) == (
        "delay", due_at.isoformat()
    )  # fmt: skip
    assert (rows[queued.id]["wait_reason"], rows[queued.id]["due_at"]) == (None, None)
    d = aioq_json("job", TARGET, later.id, app=ops)
    assert (d["status"], d["wait_reason"], d["due_at"]) == (
        "scheduled",
        "delay",
        due_at.isoformat(),
    )
    text = aioq("job", TARGET, later.id, app=ops).stdout
    assert f"{due_at:%Y-%m-%d %H:%M:%S} UTC (delay)" in text


# -- the dead-letter stream ------------------------------------------------------------------


async def test_dlq_requeue_of_a_poison_job_then_a_worker_runs_it(ops: App) -> None:
    """A poison job's dead-letter entry shows the reason; requeued, a burst worker runs it."""
    job_id = await poison(ops, 20, 22)
    await drain(ops)
    job = ops.job(job_id)
    assert await job.status() is JobStatus.FAILED
    [entry] = aioq_json("dlq", TARGET, "list", app=ops)
    assert (entry["job_id"], entry["task"], entry["queue"]) == (job_id, "add", "default")
    assert entry["reason"].startswith("poison: delivered 5 times")
    shown = aioq_json("dlq", TARGET, "show", entry["entry"], app=ops)
    assert shown["fields"] == {"id": job_id}
    assert shown["job"]["task"] == "add"
    assert shown["job"]["args"] == "[20,22]"
    # the copy taken at burial has the status of then; the live record what the job is now
    assert shown["job"]["status"] != "failed"
    assert shown["current"]["status"] == "failed"
    text = aioq("dlq", TARGET, "show", entry["entry"], app=ops).stdout
    assert f"status    failed now (was {shown['job']['status']} when buried)" in text
    assert "record now       {" in text
    assert "record at burial {" in text
    table = aioq("dlq", TARGET, "list", app=ops)
    assert "poison" in table.stdout
    assert job_id in table.stdout
    r = aioq("dlq", TARGET, "requeue", entry["entry"], app=ops)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{entry['entry']}: requeued"
    assert await job.status() is JobStatus.QUEUED
    assert await ops.redis.ttl(ops.keys().job(job_id)) == -1  # no expiry while it waits
    await drain(ops)
    assert await job.result(timeout=5) == 42
    info = await job.info()
    assert (info.error, info.attempts) == (None, 1)  # the poisoned attempt never started
    assert aioq_json("dlq", TARGET, "list", app=ops) == []
    assert aioq_json("jobs", TARGET, "--status", "failed", app=ops) == []


async def test_dlq_requeue_all_recreates_an_expired_record_from_the_entry(ops: App) -> None:
    """A garbage stream entry's job is requeued from the dead entry's copy of its record."""
    keys = ops.keys()
    # a job record and a stream entry with foreign fields: the entry is buried, the job fails
    await ops.redis.hset(keys.job("g1"), mapping={
        "status": "queued", "task": "add", "queue": "default", "args": "[2,3]",
        "kwargs": "{}", "attempts": 0, "retries": 0, "timeout": "",
    })  # fmt: skip
    await ops.redis.xadd(keys.stream, {"id": "g1", "junk": "1"})
    await ops.redis.xadd(keys.stream, {"foreign": "data"})  # no job id: cannot be requeued
    await drain(ops)
    entries = aioq_json("dlq", TARGET, "list", app=ops)
    assert sorted(e["job_id"] or "-" for e in entries) == ["-", "g1"]
    assert all(e["reason"].startswith("malformed stream entry") for e in entries)
    await ops.redis.delete(keys.job("g1"))  # the failed record expired
    r = aioq("dlq", TARGET, "requeue", "--all", app=ops)
    assert r.returncode == 1  # one entry stays, and says why
    assert "requeued 1 of 2 dead-letter entries" in r.stdout
    assert "the entry names no job id" in r.stdout
    await drain(ops)
    assert await ops.job("g1").result(timeout=5) == 5
    [left] = aioq_json("dlq", TARGET, "list", app=ops)
    assert left["job_id"] is None
    assert left["fields"] == {"foreign": "data"}


async def test_dlq_requeue_leaves_an_active_job_alone(ops: App) -> None:
    """Requeueing a dead entry whose job is queued again (retried) changes nothing."""
    job_id = await poison(ops, 1, 1)
    await drain(ops)
    [entry] = aioq_json("dlq", TARGET, "list", app=ops)
    assert aioq("retry", TARGET, job_id, app=ops).returncode == 0
    r = aioq("dlq", TARGET, "requeue", entry["entry"], app=ops)
    assert r.returncode == 1
    assert "the job is queued" in r.stdout
    assert await ops.redis.xlen(ops.keys().stream) == 1  # one entry: no duplicate run
    missing = aioq("dlq", TARGET, "requeue", "1-1", app=ops)
    assert missing.returncode == 1
    assert "1-1: missing" in missing.stdout
    usage = aioq("dlq", TARGET, "requeue", app=ops)
    assert usage.returncode == 2
    assert "ENTRY_ID... or --all" in usage.stderr


async def test_dlq_purge_asks_unless_yes(ops: App) -> None:
    """`aioq dlq purge` deletes the dead-letter entries only once confirmed."""
    for i in range(3):
        await poison(ops, i, i)
    await drain(ops)
    no = aioq("dlq", TARGET, "purge", app=ops, input="n\n")
    assert no.returncode == 1
    assert await ops.redis.xlen(ops.keys().dead) == 3
    yes = aioq("dlq", TARGET, "purge", app=ops, input="y\n")
    assert yes.returncode == 0
    assert "deleted 3 dead-letter entries" in yes.stdout
    assert await ops.redis.xlen(ops.keys().dead) == 0
    assert aioq("dlq", TARGET, "purge", "--yes", app=ops).stdout.strip() == (
        "deleted 0 dead-letter entries"
    )


# -- control ----------------------------------------------------------------------------------


async def test_retry_puts_back_a_failed_job_only(ops: App) -> None:
    """`aioq retry` requeues a failed job as a fresh attempt and leaves other jobs alone."""
    failed = await ops.enqueue("boom", "later")
    ok = await ops.enqueue("add", 1, 1)
    await drain(ops)
    await ops.redis.set(fixed_key(ops.name), 1)  # the cause is fixed
    r = aioq("retry", TARGET, failed.id, ok.id, "nope", app=ops)
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        f"{failed.id}: requeued", f"{ok.id}: not failed (succeeded)", "nope: missing"
    ]  # fmt: skip
    info = await failed.info()
    assert (info.status, info.error, info.traceback, info.finished_at) == (
        JobStatus.QUEUED, None, None, None
    )  # fmt: skip
    assert aioq_json("jobs", TARGET, "--status", "failed", app=ops) == []
    await drain(ops)
    assert await failed.result(timeout=5) == "fixed: later"
    assert (await failed.info()).attempts == 2
    assert await ok.result(timeout=1) == 2
    await ops.redis.delete(fixed_key(ops.name))


async def test_cancel_command(ops: App) -> None:
    """`aioq cancel` cancels queued jobs, and reports finished and unknown ones (exit 1)."""
    queued = await ops.enqueue("add", 1, 2)
    later = await ops.options("add", delay=60).enqueue(3, 4)
    r = aioq("cancel", TARGET, queued.id, later.id, "--json", app=ops)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {queued.id: "cancelled", later.id: "cancelled"}
    assert await queued.status() is JobStatus.CANCELLED
    assert await later.status() is JobStatus.CANCELLED
    r = aioq("cancel", TARGET, queued.id, "nope", app=ops)
    assert r.returncode == 1
    assert r.stdout.splitlines() == [f"{queued.id}: finished", "nope: missing"]


async def test_purge_deletes_queued_jobs_and_never_running_ones(ops: App) -> None:
    """`aioq purge` deletes queued jobs and their records; the running job finishes."""
    async with Worker(ops, concurrency=1) as worker:
        running = await ops.enqueue("nap", 4.0)  # outlasts the two CLI runs below
        await wait_for(lambda: _status_is(running, JobStatus.RUNNING))
        queued = [await ops.enqueue("add", i, 1) for i in range(5)]
        refused = await in_thread("purge", TARGET, "--queue", "default", app=ops)
        assert refused.returncode == 1  # no terminal to confirm on, no --yes
        assert await ops.redis.xlen(ops.keys().stream) == 6
        r = await in_thread("purge", TARGET, "--queue", "default", "--yes", app=ops)
        assert r.returncode == 0, r.stderr
        assert "purged 5 queued job(s) from queue 'default'" in r.stdout
        for job in queued:
            with pytest.raises(JobNotFound):
                await job.result(timeout=1)
        assert await running.result(timeout=8) == 4.0
        assert worker.jobs_done == 1
    assert await ops.redis.xlen(ops.keys().stream) == 0


async def _status_is(job: Any, status: JobStatus) -> bool:
    return bool(await job.status() is status)


async def test_pause_stops_taking_jobs_while_running_ones_finish(ops: App) -> None:
    """A paused queue's running job finishes and nothing new starts until it is resumed."""
    async with Worker(ops, concurrency=2) as worker:
        running = await ops.enqueue("nap", 4.0)
        await wait_for(lambda: _status_is(running, JobStatus.RUNNING))
        r = await in_thread("pause", TARGET, "--queue", "default", app=ops)
        assert r.returncode == 0, r.stderr
        await wait_for(lambda: _true("default" in worker.paused.names))
        # a fetcher already parked on the queue ends its wait (BLOCK_MS) before it sees the
        # pause, as documented; after that nothing new starts, though a slot is free
        await asyncio.sleep(BLOCK_MS / 1000 + 0.1)
        waiting = [await ops.enqueue("add", i, 1) for i in range(3)]
        info = aioq_json("info", TARGET, app=ops)  # (blocks the loop a moment: harmless)
        assert {q["queue"]: q["paused"] for q in info["queues"]} == {
            "default": True, "emails": False
        }  # fmt: skip
        assert await running.result(timeout=5) == 4.0  # the running job finishes
        await asyncio.sleep(0.5)
        assert [await j.status() for j in waiting] == [JobStatus.QUEUED] * 3
        mail = await ops.enqueue("send", "x@example.com")  # other queues keep running
        assert await mail.result(timeout=5) == "sent to x@example.com"
        r = await in_thread("resume", TARGET, "--queue", "default", app=ops)
        assert r.returncode == 0, r.stderr
        assert [await j.result(timeout=5) for j in waiting] == [1, 2, 3]


async def _true(value: bool) -> bool:
    return value


async def test_a_worker_started_on_a_paused_queue_takes_nothing(ops: App) -> None:
    """A worker that starts while its queue is paused takes nothing from it."""
    job = await ops.enqueue("add", 1, 1)
    assert aioq("pause", TARGET, "-q", "default", app=ops).returncode == 0
    async with Worker(ops) as worker:
        await wait_for(lambda: _true(worker.paused.known))
        await asyncio.sleep(0.3)
        assert await job.status() is JobStatus.QUEUED
        await (await ops.enqueue("send", "y")).result(timeout=5)
        assert (await in_thread("resume", TARGET, "-q", "default", app=ops)).returncode == 0
        assert await job.result(timeout=5) == 2


async def test_a_burst_worker_treats_a_paused_queue_as_empty(ops: App) -> None:
    """A burst worker runs the other queues and exits, leaving a paused queue's jobs queued."""
    job = await ops.enqueue("add", 1, 1)
    mail = await ops.enqueue("send", "b@example.com")
    await aioq_ops.pause(ops, ["default"])
    await drain(ops)
    assert await job.status() is JobStatus.QUEUED
    assert await mail.result(timeout=1) == "sent to b@example.com"
    await aioq_ops.resume(ops, ["default"])
    await drain(ops)
    assert await job.result(timeout=1) == 2


async def test_enqueue_command(ops: App) -> None:
    """`aioq enqueue` prints the job id; bad JSON or an unknown task is one line, exit 2."""
    r = aioq("enqueue", TARGET, "add", "--args", "[2, 3]", app=ops)
    assert r.returncode == 0, r.stderr
    job = ops.job(r.stdout.strip())
    r = aioq("enqueue", TARGET, "send", "--kwargs", '{"to": "z@example.com"}', "--job-id",
             "mail-1", "--json", app=ops)  # fmt: skip
    assert json.loads(r.stdout) == {"id": "mail-1", "queue": "emails"}
    r = aioq("enqueue", TARGET, "add", "--args", "[1, 1]", "--delay", "60", app=ops)
    assert await ops.job(r.stdout.strip()).status() is JobStatus.SCHEDULED
    r = aioq("enqueue", TARGET, "add", "--args", "[1, 1]", "--queue", "emails", app=ops)
    assert (await ops.job(r.stdout.strip()).info()).queue == "emails"
    await drain(ops)
    assert await job.result(timeout=1) == 5
    assert await ops.job("mail-1").result(timeout=1) == "sent to z@example.com"
    for args, message in [
        (["add", "--args", "[1,"], "aioq: --args is not valid JSON"),
        (["add", "--args", '{"x": 1}'], "aioq: --args must be a JSON array, got dict"),
        (["add", "--kwargs", "[]"], "aioq: --kwargs must be a JSON object, got list"),
        (["add", "--args", "[1]"], "aioq: task 'add' called with bad arguments"),
        (["nope"], "aioq: unknown task 'nope': app"),
        (["add", "--args", "[1, 2]", "--queue", "nope"], "aioq: unknown queue(s) 'nope'"),
    ]:
        r = aioq("enqueue", TARGET, *args, app=ops)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, args
        assert r.stderr.startswith(message), args


COMMANDS = [
    ["info", TARGET], ["jobs", TARGET], ["job", TARGET, "x"], ["dlq", TARGET, "list"],
    ["dlq", TARGET, "show", "1-1"], ["dlq", TARGET, "requeue", "--all"],
    ["dlq", TARGET, "purge", "--yes"], ["cancel", TARGET, "x"], ["retry", TARGET, "x"],
    ["purge", TARGET, "--queue", "default", "--yes"], ["pause", TARGET, "--queue", "default"],
    ["resume", TARGET, "--queue", "default"], ["enqueue", TARGET, "add", "--args", "[1, 2]"],
]  # fmt: skip


def aioq_all(argvs: list[list[str]], app: App) -> list[tuple[int, str]]:
    """Run several ``aioq`` commands at once; (exit code, stderr) of each."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIOQ_REDIS_URL": app.redis_url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "aioq", *argv],
            cwd=ROOT,
            env=env,
            text=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for argv in argvs
    ]
    return [(p.wait(60), p.communicate()[1]) for p in procs]


def test_every_command_fails_in_one_line_without_redis(tmp_path: Path) -> None:
    """Every command gives one clear line and exit code 2 when Redis does not answer."""
    url = f"unix://{tmp_path}/absent.sock"
    for argv, (code, stderr) in zip(
        COMMANDS, aioq_all(COMMANDS, App("unreachable", redis_url=url)), strict=True
    ):
        assert code == 2, argv
        assert stderr.strip().splitlines() == [stderr.strip()], argv
        assert stderr.startswith(f"aioq: cannot reach Redis at {url}"), argv


def test_every_command_fails_in_one_line_on_a_bad_target() -> None:
    """Every command gives one clear line and exit code 2 when MODULE:APP does not import."""
    argvs = [[a if a != TARGET else "no_such_module_xyz:app" for a in argv] for argv in COMMANDS]
    for argv, (code, stderr) in zip(argvs, aioq_all(argvs, App("unused")), strict=True):
        assert code == 2, argv
        assert stderr.strip().splitlines() == [
            "aioq: cannot import module 'no_such_module_xyz': "
            "ModuleNotFoundError: No module named 'no_such_module_xyz'"
        ], argv


# -- workers in `aioq info` ------------------------------------------------------------------


async def test_info_lists_live_workers_and_prunes_dead_ones(ops: App) -> None:
    """`aioq info` shows each live worker's heartbeat; a silent one is dropped and pruned."""
    key = workers_key(ops.name)
    stale = {"beat": 1, "host": "gone", "pid": 1, "queues": ["default"], "concurrency": 1}
    await ops.redis.hset(key, "gone:1:abc", orjson.dumps(stale))
    async with Worker(ops, concurrency=7) as worker:
        job = await ops.enqueue("nap", 30.0)
        await wait_for(lambda: _status_is(job, JobStatus.RUNNING))
        await wait_for(lambda: _beats_running(ops, worker.consumer))  # the next heartbeat
        r = await in_thread("info", TARGET, "--json", app=ops)
        [w] = json.loads(r.stdout)["workers"]
        assert (w["consumer"], w["host"], w["pid"]) == (worker.consumer, os.uname().nodename,
                                                        os.getpid())  # fmt: skip
        assert (w["queues"], w["concurrency"], w["running"]) == (["default", "emails"], 7, 1)
        assert 0 < w["uptime"] < 30
        assert 0 <= w["last_beat"] < 3
        assert await ops.redis.hkeys(key) == [worker.consumer.encode()]  # the stale one pruned
        table = await in_thread("info", TARGET, app=ops)
        assert worker.consumer in table.stdout
        assert "1 worker(s) alive" in table.stdout
        assert await job.cancel()
    assert await ops.redis.hkeys(key) == []  # a clean stop removes the entry
    assert aioq_json("info", TARGET, app=ops)["workers"] == []


async def test_info_shows_the_throughput_of_the_last_minute(ops: App) -> None:
    """`aioq info` sums the throughput buckets of the last minute the heartbeats wrote."""
    await ops.enqueue_many([ops.tasks["add"].call(i, i) for i in range(23)])
    await drain(ops)
    tput = aioq_json("info", TARGET, app=ops)["throughput"]
    assert tput["jobs"] == 23
    assert 60 <= tput["seconds"] <= 70  # whole buckets, the current one as far as it has gone
    assert tput["rate"] == pytest.approx(23 / tput["seconds"])
    table = aioq("info", TARGET, app=ops).stdout  # a little later: the rate may have moved
    assert re.search(r"^throughput: 0\.[34] jobs/s over the last minute \(23 jobs\)$", table, re.M)


async def _beats_running(app: App, consumer: str) -> bool:
    raw = await app.redis.hget(workers_key(app.name), consumer)
    return raw is not None and orjson.loads(raw)["running"] == 1


# -- progress ---------------------------------------------------------------------------------


async def test_progress_streams_values_in_order_and_ends_at_completion(ops: App) -> None:
    """`job.progress()` yields every value the task sets, in order, and ends when it finishes."""
    job = await ops.enqueue("steps", 5)
    seen: list[Any] = []

    async def follow() -> None:
        async for p in job.progress():
            seen.append(p)

    async with asyncio.timeout(10):
        follower = asyncio.ensure_future(follow())
        await asyncio.sleep(0.2)  # subscribed before the job starts
        async with Worker(ops):
            await follower
    assert seen == [{"step": i, "of": 5} for i in range(1, 6)]
    assert await job.result(timeout=1) == 5
    # a job that finished before the iteration started: its last value, then the end
    assert [p async for p in job.progress()] == [{"step": 5, "of": 5}]
    quiet = await ops.enqueue("add", 1, 1)
    await drain(ops)
    assert [p async for p in quiet.progress()] == []
    with pytest.raises(JobNotFound):
        [p async for p in ops.job("nope").progress()]


async def test_progress_rereads_the_record_when_messages_were_lost(
    ops: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`job.progress()` re-reads the record after a quiet spell, so lost messages cannot hang it."""
    import aioq.job

    monkeypatch.setattr(aioq.job, "_PROGRESS_RECHECK", 0.1)
    job = await ops.enqueue("add", 1, 1)
    seen: list[Any] = []

    async def follow() -> None:
        async for p in job.progress():
            seen.append(p)

    async with asyncio.timeout(5):
        follower = asyncio.ensure_future(follow())
        await asyncio.sleep(0.2)
        # written as a worker would, but with nothing published (as while disconnected)
        await ops.redis.hset(ops.keys().job(job.id), mapping={
            "progress": b'"half"', "progress_seq": 1, "status": "succeeded", "result": b"2",
        })  # fmt: skip
        await follower
    assert seen == ["half"]


async def test_jobs_of_a_task_the_app_lacks_is_one_line_naming_its_tasks(ops: App) -> None:
    """An empty table would read as "no such jobs" when the name is a typo."""
    r = aioq("jobs", TARGET, "--task", "tasks.nap", app=ops)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"aioq: no task named 'tasks.nap' on app {ops.name!r} "
        "(its tasks: add, boom, nap, send, steps)"
    ]
