"""aioq adapter for the shared peer benchmark (copied into its adapters/ by run.sh).

Redis streams + consumer group, batched Lua fetch/complete, leased and fenced; see
aioq's DESIGN.md. Everything is aioq's default except the worker's concurrency. The worker
is the real CLI, ``python -m aioq worker peer_aioq:app --concurrency N --log-level info``,
exec'd, so SIGTERM reaches aioq's own handler and start-up includes the CLI's imports. INFO is
the CLI's default, which logs a summary every 10 s, not a line per job (runs before aioq
9ca8046 used ``warning``; ``BENCH_WORKER_LOGLEVEL`` overrides it);
bulk enqueue is ``app.enqueue_many`` (one pipeline of enqueue scripts).
"""

import asyncio
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import REDIS_URL, run_adapter, task_done, task_start

from aioq import App

app = App("bench", redis_url=REDIS_URL)


@app.task
async def noop() -> None:
    task_start()
    task_done()


@app.task
async def sleep() -> None:
    task_start()
    await asyncio.sleep(0.01)
    task_done()


@app.task
async def lat(i: int) -> None:
    task_start()
    task_done(i)


TASKS = {"noop": noop, "sleep": sleep}


def _version() -> str:
    v = metadata.version("aioq-redis")
    src = os.environ.get("AIOQ_SRC")
    if src:
        try:
            out = subprocess.run(
                ["git", "-C", src, "rev-parse", "--short=12", "HEAD"],
                capture_output=True, text=True, check=True, timeout=10,
            )  # fmt: skip
            dirty = subprocess.run(
                ["git", "-C", src, "status", "--porcelain", "--", "aioq"],
                capture_output=True, text=True, check=True, timeout=10,
            ).stdout.strip()  # fmt: skip
            v += f" ({out.stdout.strip()}{', aioq/ modified' if dirty else ''})"
        except (OSError, subprocess.SubprocessError):
            marker = Path(src) / "AIOQ_COMMIT"  # next to a `git archive` snapshot
            if marker.exists():
                v += f" ({marker.read_text().strip()})"
    return v


class Peer:
    name = "aioq"
    packages = ("aioq", "redis", "hiredis", "orjson")
    notes = "defaults; CLI `aioq worker --concurrency N`; bulk: app.enqueue_many"

    @property
    def version(self) -> str:  # not at import: the worker imports this module too
        return _version()

    async def open(self) -> None:
        await app.ping()

    async def close(self) -> None:
        await app.aclose()

    async def enqueue(self, kind: str, i: int) -> None:
        if kind == "lat":
            await lat.enqueue(i)
        else:
            await TASKS[kind].enqueue()

    async def enqueue_bulk(self, kind: str, n: int) -> None:
        if kind == "lat":
            await app.enqueue_many([lat.call(i) for i in range(n)])
        else:
            t = TASKS[kind]
            await app.enqueue_many([t.call() for _ in range(n)])

    def worker(self, concurrency: int) -> None:
        level = os.environ.get("BENCH_WORKER_LOGLEVEL", "info").lower()
        argv = [sys.executable, "-m", "aioq", "worker", "peer_aioq:app",
                "--concurrency", str(concurrency), "--log-level", level]  # fmt: skip
        os.chdir(Path(__file__).resolve().parent)  # the CLI imports peer_aioq from the cwd
        os.execv(sys.executable, argv)


if __name__ == "__main__":
    run_adapter(Peer)
