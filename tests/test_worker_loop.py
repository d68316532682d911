"""``aioq worker --loop asyncio|uvloop|auto``: the job runs in the loop asked for, the
start-up line says which, and uvloop missing is one line naming the extra, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aioq import App

from .conftest import unique_name
from .helpers import ROOT

pytestmark = pytest.mark.anyio


def worker(
    redis_url: str, name: str, *args: str, pythonpath: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (pythonpath, str(ROOT)) if p),
        "AIOQ_REDIS_URL": redis_url,
        "AIOQ_APP_NAME": name,
    }
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "aioq", "worker", "tests.apps.loops:app",
         "--burst", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def no_uvloop(tmp_path: Path) -> str:
    """A PYTHONPATH entry on which ``import uvloop`` fails, as where it is not installed."""
    (tmp_path / "uvloop").mkdir()
    (tmp_path / "uvloop" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'uvloop'\", name='uvloop')\n"
    )
    return str(tmp_path)


@pytest.mark.parametrize(
    ("args", "module", "said"),
    [
        ((), "asyncio.unix_events", "loop asyncio"),  # the default
        (("--loop", "uvloop"), "uvloop", "loop uvloop"),
        (("--loop", "auto"), "uvloop", "loop uvloop"),  # uvloop is in the dev extra
    ],
)
async def test_the_job_runs_in_the_loop_asked_for(
    redis_url: str, args: tuple[str, ...], module: str, said: str
) -> None:
    import tests.apps.loops as loops

    name = unique_name("loop")
    async with App(name, redis_url=redis_url) as app:
        job = await app.enqueue(loops.which_loop.name)
        r = worker(redis_url, name, *args)
        assert r.returncode == 0, r.stderr
        assert await job.result(timeout=1) == module
    started = [line for line in r.stderr.splitlines() if " started: app " in line]
    assert len(started) == 1, r.stderr
    assert started[0].endswith(f", {said}"), r.stderr


async def test_auto_falls_back_to_asyncio_without_uvloop(redis_url: str, no_uvloop: str) -> None:
    name = unique_name("loop")
    async with App(name, redis_url=redis_url) as app:
        job = await app.enqueue("which_loop")
        r = worker(redis_url, name, "--loop", "auto", pythonpath=no_uvloop)
        assert r.returncode == 0, r.stderr
        assert await job.result(timeout=1) == "asyncio.unix_events"


def test_uvloop_missing_or_an_unknown_loop_is_one_line_exit_2(
    redis_url: str, no_uvloop: str
) -> None:
    r = worker(redis_url, unique_name(), "--loop", "uvloop", pythonpath=no_uvloop)
    assert (r.returncode, r.stderr.splitlines()) == (
        2,
        ["aioq: --loop uvloop needs uvloop: pip install 'aioq-redis[uvloop]'"],
    )
    r = worker(redis_url, unique_name(), "--loop", "trio")
    assert (r.returncode, r.stderr.splitlines()) == (
        2,
        ["aioq: unknown loop 'trio' (use asyncio, uvloop or auto)"],
    )
