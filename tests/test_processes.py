"""``aioq worker --processes N``: the supervisor and its worker processes, against a real
redis-server: sharing the jobs, a child SIGKILLed, a child that cannot import, SIGTERM once
and twice, the supervisor itself SIGKILLed, recycling by job count and by memory, a cron with
two processes, and the embedded redis-server shared by the processes.

The supervisors run ``tests/apps/procs.py`` (``tests/apps/scheduling.py`` for the cron) on the
app named by the test's ``app`` fixture (passed through the environment); their log (at info)
names each child's pid as it starts, which is how a test finds the children.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from aioq import App, Worker, views
from aioq.cli import worker as cli_worker
from aioq.supervisor import BACKOFF_MAX, backoff
from aioq.views import WorkerInfo
from tests.apps.procs import side_key
from tests.helpers import ROOT, Spawned, WorkerProcess, eventually

pytestmark = pytest.mark.anyio

TARGET = "tests.apps.procs:app"
STARTED = re.compile(r"process (\d+) started \(pid (\d+)\)")

Spawn = Callable[..., WorkerProcess]


# -- helpers ------------------------------------------------------------------------------


def children(sup: WorkerProcess) -> dict[int, int]:
    """Process number -> pid of its latest start, from the supervisor's log."""
    return {int(n): int(pid) for n, pid in STARTED.findall(sup.output)}


def every_child(sup: WorkerProcess) -> list[int]:
    return [int(pid) for _, pid in STARTED.findall(sup.output)]


def running(pid: int) -> bool:
    """Whether ``pid`` runs (an orphan's zombie, not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used (/proc/PID/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def supervisors(redis_url: str) -> Iterator[Spawn]:
    """Start ``aioq worker TARGET --log-level info ARGS`` subprocesses:
    ``supervisors(app_name, *args, target=, **env)``. At teardown every supervisor is
    SIGKILLed (its children then stop on their own, PR_SET_PDEATHSIG) and every child it
    started is waited for, SIGKILLed if it still runs after 15 s."""
    spawned = Spawned()

    def spawn(app_name: str, *args: str, target: str = TARGET, **env: str) -> WorkerProcess:
        env = {"AIOQ_TEST_APP": app_name, **env}
        return spawned.start(target, redis_url, env, "--log-level", "info", *args)

    yield spawn
    spawned.close()
    deadline = time.monotonic() + 15
    for sup in spawned.started:
        for pid in every_child(sup):
            while running(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if running(pid):
                os.kill(pid, signal.SIGKILL)


async def processes_up(app: App, sup: WorkerProcess, n: int, timeout: float = 15) -> list[int]:
    """Wait until the supervisor's ``n`` current children all beat (they have started, and
    say which supervisor and number they are); their pids by number."""

    async def check() -> list[WorkerInfo] | None:
        if not sup.alive:
            raise AssertionError(f"supervisor exited early:\n{sup.output}")
        pids = children(sup)
        ws = [w for w in await views.worker_stats(app) if w.pid in pids.values()]
        return ws if len(pids) == n and len(ws) == n else None

    ws = await eventually(check, timeout, f"{n} processes of supervisor {sup.pid} beating")
    assert all(w.supervisor == sup.pid for w in ws), ws
    assert sorted(w.process or 0 for w in ws) == list(range(1, n + 1)), ws
    return [w.pid for w in sorted(ws, key=lambda w: w.process or 0)]


async def restarted(sup: WorkerProcess, number: int, pid: int) -> bool:
    """Whether process ``number`` has been started again since it was ``pid``."""
    return children(sup).get(number, pid) != pid


async def counts(app: App, what: str) -> dict[str, int]:
    raw = await app.redis.hgetall(side_key(app.name, what))
    return {k.decode(): int(v) for k, v in raw.items()}


async def statuses(app: App, job_ids: list[str]) -> list[str]:
    async with app.redis.pipeline(transaction=False) as pipe:
        for jid in job_ids:
            pipe.hget(app.keys().job(jid), "status")
        return [s.decode() for s in await pipe.execute()]


async def enqueue_work(app: App, n: int, ms: int) -> list[str]:
    work = app.options("work")
    jobs = await app.enqueue_many([work.call(ms) for _ in range(n)])
    return [j.id for j in jobs]


async def all_ended(app: App, job_ids: list[str], timeout: float) -> None:
    async def done() -> bool:
        ends = await counts(app, "ends")
        return all(ends.get(j, 0) >= 1 for j in job_ids)

    await eventually(done, timeout, f"all {len(job_ids)} jobs ended", interval=0.05)


# -- the CLI's side -----------------------------------------------------------------------


def test_backoff_doubles_up_to_its_ceiling() -> None:
    assert [backoff(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, BACKOFF_MAX, BACKOFF_MAX]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--processes", "0"], "--processes must be at least 1, got 0"),
        (["--max-jobs-per-process", "0"], "--max-jobs-per-process must be at least 1, got 0"),
        (["--max-memory-per-process", "0"], "--max-memory-per-process must be above 0 (MB)"),
        (["--processes", "3", "--metrics-port", "65534"], "up to 65536, above 65535"),
    ],
)
def test_bad_process_options_exit_2_naming_the_option(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_worker.main([TARGET, *args]) == 2
    assert message in capsys.readouterr().err


async def test_worker_limits_are_checked(app: App) -> None:
    with pytest.raises(ValueError, match="max_jobs must be >= 1, got 0"):
        Worker(app, max_jobs=0)
    with pytest.raises(ValueError, match="max_memory must be > 0 MB, got -1"):
        Worker(app, max_memory=-1)


def test_each_process_gets_the_options_but_the_supervisors_own() -> None:
    """A child's arguments parse back to the supervisor's options (so a new option cannot be
    forgotten), without --processes and --embedded-redis, each child on its own metrics port."""
    argv = [TARGET, "-c", "7", "-q", "a", "-q", "b", "--burst", "--log-level", "debug",
            "--shutdown-timeout", "2.5", "--embedded-redis", "--metrics-port", "9100",
            "--metrics-host", "0.0.0.0", "--log-format", "json", "--processes", "3",
            "--max-jobs-per-process", "9", "--max-memory-per-process", "300.5",
            "--loop", "auto"]  # fmt: skip
    given = vars(cli_worker.parser().parse_args(argv))
    own = {"processes": None, "embedded_redis": False}
    for number in (1, 3):
        child = vars(cli_worker.parser().parse_args(cli_worker.child_argv(given, number)))
        assert child == {**given, **own, "metrics_port": 9100 + number - 1}
    given["metrics_port"] = 0  # a free port each
    child = vars(cli_worker.parser().parse_args(cli_worker.child_argv(given, 2)))
    assert child["metrics_port"] == 0


def test_embedded_redis_is_started_once_for_every_process() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AIOQ_REDIS_URL"}
    r = subprocess.run(
        [sys.executable, "-m", "aioq", "worker", "tests.apps.basic:app", "--embedded-redis",
         "--processes", "2", "--burst"],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    # without the embedded server's URL a child would find no Redis, exit 2 and be restarted
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("embedded redis-server at unix://") == 1, r.stderr
    assert r.stderr.count("its queues are drained") == 2, r.stderr


# -- running ------------------------------------------------------------------------------


async def test_processes_share_the_jobs_and_info_shows_each(app: App, supervisors: Spawn) -> None:
    sup = supervisors(app.name, "--processes", "2", "--concurrency", "10")
    pids = await processes_up(app, sup, 2)
    job_ids = await enqueue_work(app, 200, 20)
    await all_ended(app, job_ids, 20)
    ran = await counts(app, "pids")
    assert set(ran) == {str(p) for p in pids}, ran  # both took jobs, nobody else did
    assert sum(ran.values()) == 200

    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIOQ_TEST_APP": app.name,
           "AIOQ_REDIS_URL": app.redis_url, "COLUMNS": "250"}  # fmt: skip
    r = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-m", "aioq", "info", TARGET],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    )
    assert r.returncode == 0, r.stderr
    assert f"#1 of {sup.pid}" in r.stdout, r.stdout
    assert f"#2 of {sup.pid}" in r.stdout, r.stdout

    sup.signal(signal.SIGTERM)
    assert await sup.exited(20) == 0, sup.output
    assert not any(running(p) for p in pids)


async def test_a_killed_process_is_restarted_and_its_jobs_reclaimed(
    app: App, supervisors: Spawn
) -> None:
    sup = supervisors(app.name, "--processes", "2", "--concurrency", "5", AIOQ_TEST_VT="1")
    first, _ = await processes_up(app, sup, 2)
    job_ids = await enqueue_work(app, 30, 400)

    async def first_busy() -> bool:
        return str(first) in await counts(app, "began")

    await eventually(first_busy, 10, f"process 1 (pid {first}) running jobs")
    os.kill(first, signal.SIGKILL)
    await eventually(lambda: restarted(sup, 1, first), 10, "process 1 restarted")
    assert f"process 1 (pid {first}) was killed by SIGKILL" in sup.output
    assert "restarting it in 0.5s" in sup.output
    await processes_up(app, sup, 2)
    await all_ended(app, job_ids, 30)  # those it held too: reclaimed after their lease lapsed
    assert set(await statuses(app, job_ids)) == {"succeeded"}
    sup.signal(signal.SIGTERM)
    assert await sup.exited(20) == 0, sup.output


async def test_a_process_failing_at_import_is_retried_with_backoff(
    app: App, supervisors: Spawn, tmp_path: Path
) -> None:
    flag = tmp_path / "broken"
    flag.touch()
    sup = supervisors(app.name, "--processes", "2", AIOQ_TEST_BREAK_FLAG=str(flag))

    async def third_failure() -> bool:
        return "(3rd time in a row); restarting it in 2s" in sup.output

    await eventually(third_failure, 20, "a third failure in a row, 2 s of backoff")
    assert sup.alive
    out = sup.output
    assert re.search(r"process 1 \(pid \d+\) exited with code 2 after [\d.]+s; restarting it "
                     r"in 0\.5s", out), out  # fmt: skip
    assert "(2nd time in a row); restarting it in 1s" in out
    assert "simulated import failure" in out  # the child's own line says why
    # no busy loop: few starts, and the supervisor itself hardly ran
    assert len(every_child(sup)) <= 8, out
    assert cpu_seconds(sup.pid) < 1.0

    flag.unlink()  # the code is fixed: the next restart of each process comes up
    await processes_up(app, sup, 2, timeout=20)
    job_ids = await enqueue_work(app, 4, 0)
    await all_ended(app, job_ids, 10)
    sup.signal(signal.SIGTERM)
    assert await sup.exited(20) == 0, sup.output


# -- stopping -----------------------------------------------------------------------------


async def test_sigterm_lets_running_jobs_finish_then_exits_0(app: App, supervisors: Spawn) -> None:
    """One SIGTERM: every job started finishes, once; the others wait in the queue; a burst
    supervisor then runs those, once each."""
    sup = supervisors(app.name, "--processes", "2", "--concurrency", "3")
    await processes_up(app, sup, 2)
    job_ids = await enqueue_work(app, 20, 800)

    async def six_started() -> bool:
        return len(await counts(app, "starts")) >= 6

    await eventually(six_started, 10, "both processes running jobs")
    sup.signal(signal.SIGTERM)
    assert await sup.exited(20) == 0, sup.output
    starts, ends = await counts(app, "starts"), await counts(app, "ends")
    assert starts == ends, (starts, ends)  # every started job finished: none was cut short
    assert set(starts.values()) == {1}
    done = await statuses(app, job_ids)
    assert {s for j, s in zip(job_ids, done, strict=True) if j not in ends} == {"queued"}

    rest = supervisors(app.name, "--processes", "2", "--burst")
    assert await rest.exited(30) == 0, rest.output
    ends = await counts(app, "ends")
    assert ends == {j: 1 for j in job_ids}, ends  # every job ran exactly once
    assert await counts(app, "starts") == ends


async def test_a_second_sigterm_hands_running_jobs_back(app: App, supervisors: Spawn) -> None:
    sup = supervisors(
        app.name, "--processes", "2", "--concurrency", "2", "--shutdown-timeout", "30"
    )
    await processes_up(app, sup, 2)
    job_ids = await enqueue_work(app, 8, 20_000)

    async def four_started() -> bool:
        return len(await counts(app, "starts")) >= 4

    await eventually(four_started, 10, "both processes running jobs")
    t0 = time.monotonic()
    sup.signal(signal.SIGTERM)

    async def both_stopping() -> bool:
        return sup.output.count("giving running jobs up to 30s") == 2

    await eventually(both_stopping, 10, "both processes stopping")
    sup.signal(signal.SIGTERM)
    assert await sup.exited(20) == 0, sup.output
    assert time.monotonic() - t0 < 10  # not the 30 s grace period
    assert "second signal (SIGTERM): forwarding it" in sup.output
    assert await counts(app, "ends") == {}
    # the four running jobs are back in their stream (at once, not after a visibility
    # timeout), the others never left it: nothing lost, nothing held
    assert set(await statuses(app, job_ids)) == {"queued"}
    pending = await app.redis.xpending(app.keys().stream, "aioq")
    assert pending["pending"] == 0


async def test_a_killed_supervisor_stops_its_processes_gracefully(
    app: App, supervisors: Spawn
) -> None:
    """SIGKILL of the supervisor: the kernel sends each child SIGTERM (PR_SET_PDEATHSIG);
    they finish their running jobs and stop, removing their heartbeats."""
    sup = supervisors(app.name, "--processes", "2", "--concurrency", "2")
    pids = await processes_up(app, sup, 2)
    job_ids = await enqueue_work(app, 4, 1500)

    async def four_started() -> bool:
        return len(await counts(app, "starts")) == 4

    await eventually(four_started, 10, "both processes running jobs")
    os.kill(sup.pid, signal.SIGKILL)
    assert await sup.exited(5) == -signal.SIGKILL

    async def gone() -> bool:
        return not any(running(p) for p in pids)

    await eventually(gone, 20, f"processes {pids} exited")
    assert await counts(app, "ends") == {j: 1 for j in job_ids}
    assert await views.worker_stats(app) == []  # a clean stop each


# -- recycling ----------------------------------------------------------------------------


async def test_max_jobs_recycles_processes_and_runs_every_job_once(
    app: App, supervisors: Spawn
) -> None:
    m, n, concurrency = 50, 500, 20
    job_ids = await enqueue_work(app, n, 0)
    sup = supervisors(app.name, "--processes", "2", "--burst", "--concurrency",
                      str(concurrency), "--max-jobs-per-process", str(m))  # fmt: skip
    assert await sup.exited(40) == 0, sup.output  # burst: once every process found none left
    assert await counts(app, "ends") == {j: 1 for j in job_ids}
    assert await counts(app, "starts") == {j: 1 for j in job_ids}
    ran = await counts(app, "pids")
    assert len(ran) >= 4, ran  # replaced processes took over
    # each took no jobs after M, but the rest of the batch that reached M (up to half the
    # concurrency: a fetch takes as many)
    assert max(ran.values()) <= m + concurrency // 2, ran
    assert "recycled; starting its replacement now" in sup.output
    assert "recycling: " in sup.output


async def test_max_memory_recycles_a_process_that_grew(app: App, supervisors: Spawn) -> None:
    """Without --processes the limit implies a supervisor of one process; a task that holds
    200 MB pushes it past 150 MB and it is replaced."""
    sup = supervisors(app.name, "--max-memory-per-process", "150")
    [first] = await processes_up(app, sup, 1)
    await app.enqueue("hog", 200)

    await eventually(lambda: restarted(sup, 1, first), 15, "process 1 replaced")
    assert re.search(r"recycling: resident set \d+ MB is above the limit of 150 MB", sup.output)
    assert f"process 1 (pid {first}) exited with code 75" in sup.output
    [second] = await processes_up(app, sup, 1)
    assert await counts(app, "hogs") == {str(first): 1}
    job_ids = await enqueue_work(app, 3, 0)
    await all_ended(app, job_ids, 10)
    assert await counts(app, "pids") == {str(second): 3}
    sup.signal(signal.SIGTERM)
    assert await sup.exited(20) == 0, sup.output


# -- scheduling ---------------------------------------------------------------------------


async def test_a_cron_fires_once_per_tick_with_two_processes(app: App, supervisors: Spawn) -> None:
    every_ms = 250
    sup = supervisors(app.name, "--processes", "2", "--concurrency", "4",
                      target="tests.apps.scheduling:app", AIOQ_TEST_CRON_EVERY="0.25")  # fmt: skip
    await processes_up(app, sup, 2)
    await anyio.sleep(0.3)  # both cron loops have loaded their state
    t0 = await _redis_ms(app)
    await anyio.sleep(2.0)
    t1 = await _redis_ms(app)
    await anyio.sleep(0.3)  # the tick at or before t1 has run
    sup.signal(signal.SIGTERM)
    assert await sup.exited(20) == 0, sup.output
    raw = await app.redis.lrange(f"aioq-test:{app.name}:ticks", 0, -1)
    ticks = sorted(int(r.decode().rsplit(" ", 1)[0].rsplit(":", 1)[1]) for r in raw)
    assert len(ticks) == len(set(ticks)), f"a tick ran twice: {ticks}"
    expected = list(range(t0 - t0 % every_ms + every_ms, t1 + 1, every_ms))
    assert set(expected) <= set(ticks), f"ticks of {t0}..{t1} missing: {ticks}"
    assert len(expected) >= 7, expected


async def _redis_ms(app: App) -> int:
    seconds, micros = await app.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000
