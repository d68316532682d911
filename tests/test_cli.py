"""The `aioq` command: worker start-up errors, burst mode, the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aioq import App, JobStatus

from .conftest import unique_name
from .helpers import ROOT

pytestmark = pytest.mark.anyio


def aioq(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "aioq", *args],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_module_that_does_not_import_is_one_line_exit_2() -> None:
    """A MODULE:APP that cannot be imported gives one clear line and exit code 2."""
    r = aioq("worker", "no_such_module_xyz:app")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "aioq: cannot import module 'no_such_module_xyz': "
        "ModuleNotFoundError: No module named 'no_such_module_xyz'"
    ]


def test_target_that_is_not_an_app_or_malformed() -> None:
    r = aioq("worker", "tests.apps.basic:add")
    assert r.returncode == 2
    assert "tests.apps.basic:add is a Task, not an aioq.App" in r.stderr
    r = aioq("worker", "tests.apps.basic")
    assert r.returncode == 2
    assert "expected MODULE:APP" in r.stderr


def test_unknown_queue_is_rejected_naming_it(redis_url: str) -> None:
    r = aioq("worker", "tests.apps.basic:app", "--queue", "nope", env={"AIOQ_REDIS_URL": redis_url})
    assert r.returncode == 2
    assert "unknown queue(s) 'nope'" in r.stderr
    assert "'default', 'emails'" in r.stderr


def test_unreachable_redis_is_one_line_exit_2(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/absent.sock"
    r = aioq("worker", "tests.apps.basic:app", "--burst", env={"AIOQ_REDIS_URL": url})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(f"aioq: cannot reach Redis at {url}")
    assert "Traceback" not in r.stderr


async def test_burst_worker_processes_every_queue_and_exits_0(redis_url: str) -> None:
    """`aioq worker --burst` drains the default and emails queues, then exits 0."""
    name = unique_name()
    app = App(name, redis_url=redis_url)  # a producer that knows the tasks only by name
    jobs = [await app.enqueue("add", i, 1) for i in range(20)]
    jobs.append(await app.options("send", queue="emails").enqueue("ops@example.com"))
    r = aioq(
        "worker", "tests.apps.basic:app", "--burst", "--concurrency", "5",
        env={"AIOQ_REDIS_URL": redis_url, "AIOQ_APP_NAME": name},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert [await j.result(timeout=1) for j in jobs[:20]] == [i + 1 for i in range(20)]
    assert await jobs[-1].result(timeout=1) == "sent to ops@example.com"
    assert await jobs[-1].status() is JobStatus.SUCCEEDED
    await app.aclose()


def test_embedded_redis_burst_worker() -> None:
    """--embedded-redis starts (and removes) a private redis-server for the worker."""
    r = aioq("worker", "tests.apps.basic:app", "--embedded-redis", "--burst")
    assert r.returncode == 0, r.stderr
    assert "embedded redis-server at unix://" in r.stderr
    assert "(new each start; its data goes when the worker stops)" in r.stderr


def test_demo_runs_end_to_end() -> None:
    """`aioq demo` runs its jobs on a private Redis and prints the outcome table."""
    r = aioq("demo", "--jobs", "40", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "40 jobs in" in r.stdout
    assert "charge_card" in r.stdout
    assert "succeeded" in r.stdout
    assert "failed: ValueError" in r.stdout


async def test_info_counts_each_queue_and_prints_json(redis_url: str) -> None:
    """`aioq info --json` reports queued, running, scheduled and dead jobs per queue."""
    name = unique_name()
    app = App(name, redis_url=redis_url)
    for i in range(2):
        await app.enqueue("add", i, 1)
    await app.options("add", priority=5).enqueue(2, 1)
    await app.options("send", queue="emails", delay=60).enqueue("x@example.com")
    r = aioq("info", "tests.apps.basic:app", "--json",
             env={"AIOQ_REDIS_URL": redis_url, "AIOQ_APP_NAME": name})  # fmt: skip
    assert r.returncode == 0, r.stderr
    queues = {q["queue"]: q for q in json.loads(r.stdout)["queues"]}
    assert queues["default"] == {
        "queue": "default", "queued": 3, "running": 0, "scheduled": 0, "failed": 0,
        "dead": 0, "paused": False, "by_priority": {"0": 2, "5": 1},
    }  # fmt: skip
    assert queues["emails"]["scheduled"] == 1
    table = aioq(
        "info", "tests.apps.basic:app", env={"AIOQ_REDIS_URL": redis_url, "AIOQ_APP_NAME": name}
    )
    assert table.returncode == 0
    assert "default" in table.stdout
    assert "3 (p5 1, p0 2)" in table.stdout
    await app.aclose()


def test_info_with_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/absent.sock"
    r = aioq("info", "tests.apps.basic:app", env={"AIOQ_REDIS_URL": url})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip().splitlines()[0]]
    assert "cannot reach Redis" in r.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["mod:app"],
        ["mod:app", "-c", "7", "-q", "a", "--queue", "b", "--burst", "--log-level", "debug"],
        ["mod:app", "--concurrency", "3", "--shutdown-timeout", "2.5", "--embedded-redis"],
        ["mod:app", "--no-burst", "--no-embedded-redis"],
        ["mod:app", "--metrics-port", "9100", "--metrics-host", "0.0.0.0", "--log-format", "json"],
        ["mod:app", "--processes", "3", "--max-jobs-per-process", "9"],
        ["mod:app", "--max-memory-per-process", "512.5"],
    ],
)
def test_worker_command_has_one_parser(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`aioq worker` (straight to its parser) and the typer app's `worker` (which forwards
    its arguments) run the worker with exactly the same options."""
    from typer.testing import CliRunner

    from aioq.cli import commands, worker

    seen: list[dict[str, object]] = []
    monkeypatch.setattr(worker, "run", lambda **kw: seen.append(kw) or 0)
    assert worker.main(argv) == 0
    result = CliRunner().invoke(commands.cli, ["worker", *argv])
    assert result.exit_code == 0, result.output
    assert seen[0] == seen[1] == vars(worker.parser().parse_args(argv))


def test_worker_start_up_does_not_import_the_cli_framework() -> None:
    """`aioq worker` never imports typer or rich: they would lengthen every start-up."""
    code = (
        "import sys; from aioq.cli import main\n"
        "try: main(['worker', 'tests.apps.basic:app', '--concurrency', '0'])\n"
        "except SystemExit as e: assert e.code == 2, e.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'rich', 'click')))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    assert "--concurrency must be at least 1, got 0" in r.stderr


def test_worker_help_lists_every_option() -> None:
    from aioq.cli.worker import parser

    r = aioq("worker", "--help", env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    options = [s for action in parser()._actions for s in action.option_strings]
    assert "--shutdown-timeout" in options
    for option in options:
        assert option in r.stdout
    assert aioq("worker", "-h", env={"COLUMNS": "80"}).stdout == r.stdout
    assert "worker" in aioq("--help").stdout  # typer's list of commands still has it


async def test_rate_limit_command_sets_and_clears_an_override(redis_url: str) -> None:
    """`aioq rate-limit` writes a run-time override every worker reads; --clear removes it."""
    name = unique_name()
    env = {"AIOQ_REDIS_URL": redis_url, "AIOQ_APP_NAME": name}
    r = aioq("rate-limit", "tests.apps.basic:app", "send", "3/m", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "send: 3/m"
    app = App(name, redis_url=redis_url)
    assert await app.rate_limits("emails") == {"send": "3/m"}
    r = aioq("rate-limit", "tests.apps.basic:app", "send", "--clear", env=env)
    assert r.stdout.strip() == "send: no limit"
    assert await app.rate_limits("emails") == {}
    bad = aioq("rate-limit", "tests.apps.basic:app", "send", "lots", env=env)
    assert bad.returncode == 2
    assert "invalid rate limit 'lots'" in bad.stderr
    unknown = aioq("rate-limit", "tests.apps.basic:app", "nope", "1/s", env=env)
    assert unknown.returncode == 2
    assert "unknown task 'nope'" in unknown.stderr
    await app.aclose()


async def test_info_lists_cron_schedules_and_rate_limits(redis_url: str) -> None:
    """`aioq info` shows each cron schedule's next tick and the rate limits in force."""
    name = unique_name()
    env = {"AIOQ_REDIS_URL": redis_url, "AIOQ_APP_NAME": name, "COLUMNS": "200"}
    app = App(name, redis_url=redis_url)
    await app.set_rate_limit("send", "7/m", queue="emails")
    r = aioq("info", "tests.apps.basic:app", "--json", env=env)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    (cron,) = report["crons"]
    assert cron["schedule"] == "hourly@every 3600s"
    assert cron["last_tick"] is None
    assert cron["next_tick"].endswith(":00:00+00:00")
    assert report["rate_limits"] == [{"queue": "emails", "task": "send", "limit": "7/m"}]
    table = aioq("info", "tests.apps.basic:app", env=env)
    assert "hourly@every 3600s" in table.stdout
    assert "7/m" in table.stdout
    await app.aclose()


def test_version_prints_the_installed_distributions_version() -> None:
    """`aioq --version` (and -V) prints the version of the installed distribution, aioq-redis."""
    from importlib import metadata

    for flag in ("--version", "-V"):
        r = aioq(flag)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"aioq {metadata.version('aioq-redis')}"


@pytest.mark.parametrize("command", ["worker", "info"])
def test_a_bad_redis_url_is_one_line_naming_it_exit_2(command: str) -> None:
    url = "redis:/localhost:6400"
    r = aioq(command, "tests.apps.basic:app", env={"AIOQ_REDIS_URL": url})
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"AIOQ_REDIS_URL {url!r} is not a Redis URL" in lines[0]


def test_a_database_the_server_lacks_is_one_line_exit_2(redis_url: str) -> None:
    url = f"{redis_url}?db=99"
    r = aioq("worker", "tests.apps.basic:app", "--burst", env={"AIOQ_REDIS_URL": url})
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"{url!r}: the server has no database 99" in lines[0]
