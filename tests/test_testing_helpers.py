"""``aioq.testing``: a user's FastAPI test exactly as docs/testing.md shows it (run by pytest
in a subprocess, with the plugin loaded by its entry point and by ``-p``), and what ``drain``,
``queued``, ``isolated`` and ``redis_server`` promise, against real Redis."""

from __future__ import annotations

import os
import re
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from aioq import App, JobStatus, Retry, TaskFailed, current_job
from aioq import testing as aioq_testing
from aioq.testing import drain, isolated, queued

from .helpers import ROOT, eventually

pytestmark = pytest.mark.anyio


def _readme_block(first_line: str) -> str:
    """The code block of the "Testing your code" page (docs/testing.md) whose first line is
    ``first_line``."""
    page = (ROOT / "docs" / "testing.md").read_text()
    found = re.search(r"```\w*\n(" + re.escape(first_line) + r"\n.*?)```", page, re.S)
    assert found, f"no code block starting {first_line!r} in docs/testing.md"
    return found.group(1)


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A user's project: the README's shop.py (examples/quickstart.py), its pytest
    configuration and its test, as docs/testing.md shows them."""
    shutil.copy(ROOT / "examples" / "quickstart.py", tmp_path / "shop.py")
    (tmp_path / "pyproject.toml").write_text(_readme_block("# pyproject.toml"))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_shop.py").write_text(_readme_block("# tests/test_shop.py"))
    return tmp_path


async def _pytest(project: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = await anyio.run_process(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", *args],
        cwd=project,
        env={**os.environ, **(env or {})},
        check=False,
    )
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, out
    return out


async def test_the_readme_fastapi_test_passes_with_the_entry_point_plugin(
    user_project: Path,
) -> None:
    """The user's test passes as written, and again after a test that leaves a job queued:
    each test has its own name on the one redis-server, so it sees no other test's jobs."""
    test = user_project / "tests" / "test_shop.py"
    test.write_text(test.read_text() + LEAVES_A_JOB)
    out = await _pytest(user_project)
    assert "4 passed" in out


LEAVES_A_JOB = """

async def test_leaves_a_job_queued(aioq_app: App) -> None:
    assert await queued(aioq_app) == []
    await send_receipt.enqueue(1, "left@example.com")


test_again = test_receipt_is_sent
test_leaves_another = test_leaves_a_job_queued
"""


async def test_the_plugin_loads_with_dash_p_too(user_project: Path) -> None:
    """``pytest -p aioq.testing`` works with plugin autoloading off, and beside the entry
    point (one registration); without the ini option the fixture says what to set."""
    off = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    out = await _pytest(user_project, "-p", "aioq.testing", "-p", "anyio.pytest_plugin", env=off)
    assert "1 passed" in out
    assert "1 passed" in await _pytest(user_project, "-p", "aioq.testing")
    (user_project / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    done = await anyio.run_process(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=user_project,
        check=False,
    )
    assert done.returncode == 1
    assert 'set aioq_app = "MODULE:APP"' in done.stdout.decode()


async def test_drain_runs_queued_due_and_retried_jobs_and_leaves_later_ones(app: App) -> None:
    ran: list[str] = []

    @app.task
    async def record(what: str) -> str:
        ran.append(what)
        return what

    @app.task(retries=2, backoff=60.0)  # a minute of backoff that drain does not wait for
    async def flaky() -> int:
        if current_job().attempt < 3:
            raise ConnectionError("try again")
        return current_job().attempt

    @app.task
    async def asks_later() -> int:
        if current_job().attempt == 1:
            raise Retry(delay=3600)
        return 2

    now = await app.redis.time()
    soon = datetime.fromtimestamp(now[0], tz=UTC) + timedelta(milliseconds=300)
    queued_now = await record.enqueue("queued")
    due = await record.options(eta=soon).enqueue("due")
    later = await record.options(delay=3600).enqueue("later")
    retried, asked = await flaky.enqueue(), await asks_later.enqueue()

    async def past_soon() -> bool:
        return datetime.fromtimestamp((await app.redis.time())[0], tz=UTC) > soon

    await eventually(past_soon, 5, "Redis' clock past the eta")
    await drain(app)
    assert sorted(ran) == ["due", "queued"]
    assert await retried.result(timeout=1) == 3
    assert await asked.result(timeout=1) == 2
    for job in (queued_now, due):
        assert await job.status() is JobStatus.SUCCEEDED
    waiting = await queued(app)
    assert [(j.id, j.status, j.wait_reason) for j in waiting] == [
        (later.id, JobStatus.SCHEDULED, "delay")
    ]
    assert waiting[0].due_at is not None
    assert waiting[0].due_at > soon


async def test_drain_raises_the_first_failure_after_running_everything(app: App) -> None:
    @app.task
    async def broken(n: int) -> None:
        raise LookupError(f"no item {n}")

    @app.task
    async def fine() -> str:
        return "ok"

    first, second = await broken.enqueue(1), await broken.enqueue(2)
    ok = await fine.enqueue()
    with pytest.raises(TaskFailed, match="no item") as failed:
        await drain(app)
    assert await ok.result(timeout=1) == "ok"  # the drain ran it all before raising
    assert failed.value.exc_type == "LookupError"
    notes = "\n".join(failed.value.__notes__)
    assert f"job {failed.value.job_id!r} of task 'broken' failed in drain()" in notes
    assert "LookupError: no item" in notes  # the remote traceback
    assert "1 more job(s) failed for good" in notes
    assert failed.value.job_id in (first.id, second.id)  # the one that failed first
    await drain(app)  # nothing new failed: the old failures are not raised again


async def test_drain_gives_up_on_a_job_that_retries_for_ever(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aioq_testing, "MAX_ROUNDS", 3)

    @app.task
    async def never_ready() -> None:
        raise Retry(delay=1)

    await never_ready.enqueue()
    with pytest.raises(RuntimeError, match="still being retried after 3 rounds"):
        await drain(app)


async def test_queued_lists_waiting_jobs_oldest_first_with_their_arguments(app: App) -> None:
    @app.task
    async def send(to: str, *, urgent: bool = False) -> None: ...

    @app.task(queue="other")
    async def other(n: int) -> None: ...

    a = await send.enqueue("a@example.com")
    b = await send.options(delay=600).enqueue("b@example.com", urgent=True)
    c = await other.enqueue(3)
    jobs = await queued(app, task=send)
    assert [(j.id, j.args, j.kwargs) for j in jobs] == [
        (a.id, ["a@example.com"], {}),
        (b.id, ["b@example.com"], {"urgent": True}),
    ]
    assert [j.id for j in await queued(app, "other")] == [c.id]  # a task's name does too
    assert [j.id for j in await queued(app, queue="other")] == [c.id]
    assert [j.id for j in await queued(app)] == [a.id, b.id, c.id]
    await drain(app)
    assert [j.id for j in await queued(app)] == [b.id]  # ran: no longer waiting


async def test_isolated_binds_the_apps_own_object_and_restores_it(redis_url: str) -> None:
    app = App("fixed-name", redis_url="redis://localhost:1/0")

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    names = []
    for _ in range(2):
        async with isolated(app, redis_url) as bound:
            assert bound is app
            assert app.redis_url == redis_url
            assert app.name.startswith("fixed-name-")
            names.append(app.name)
            assert await queued(app) == []  # the previous block's job is not here
            job = await add.enqueue(1, 2)  # through the task: its app is the bound one
            assert [j.id for j in await queued(app, task=add)] == [job.id]
    assert names[0] != names[1]
    assert (app.name, app.redis_url) == ("fixed-name", "redis://localhost:1/0")


async def test_redis_server_is_private_and_gone_after_the_block() -> None:
    async with aioq_testing.redis_server() as url:
        assert url.startswith("unix://")
        app = App("t", redis_url=url)
        await app.ping()
        await app.aclose()
        socket = anyio.Path(url.removeprefix("unix://"))
        assert await socket.exists()
    assert not await socket.exists()


def test_the_helpers_are_the_modules_public_names() -> None:
    assert aioq_testing.__all__ == ["drain", "isolated", "queued", "redis_server"]
