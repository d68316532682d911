"""Helpers for tests that run workers as real subprocesses (``python -m aioq worker``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent


def spawn_worker(
    target: str,
    redis_url: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``aioq worker TARGET`` in its own process group, logging to a pipe."""
    full_env = {**os.environ, "AIOQ_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "aioq", "worker", target, "--log-level", "warning", *args],
        cwd=ROOT,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    """Signal a worker and wait for it; returns its exit code (kills it if it hangs)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


async def eventually(
    check: Callable[[], Awaitable[T]], timeout: float, what: str, interval: float = 0.01
) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what} (last: {value!r})")
        await asyncio.sleep(interval)


class WorkerProcess:
    """``aioq worker TARGET`` in a subprocess whose Redis connections are named (CLIENT LIST
    shows what it does); a thread collects its output, so a chatty worker never blocks on a
    full pipe and a failing test can show it."""

    def __init__(self, target: str, redis_url: str, env: dict[str, str], *args: str) -> None:
        self.name = f"aioq-test-{uuid.uuid4().hex[:10]}"
        url = f"{redis_url}{'&' if '?' in redis_url else '?'}client_name={self.name}"
        self.proc = spawn_worker(target, url, *args, env=env)
        self.pid = self.proc.pid
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            self._lines.append(line.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self._lines)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            self.proc.send_signal(sig)

    async def exited(self, timeout: float) -> int:
        """Wait (without blocking the event loop) for the process to exit; its exit code."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.pid} still running after {timeout}s")
            await asyncio.sleep(0.02)
        self._reader.join(5)
        return self.proc.returncode

    def close(self) -> None:
        """Teardown: kill it if it still runs (stopped or not), collect the rest of its output."""
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def parked(worker: Any, queues: int | None = None, timeout: float = 10.0) -> None:
    """Wait until an in-process ``Worker`` has parked its fetchers in their blocking reads:
    every served queue idle (or ``queues`` of them) and as many blocked XREADGROUPs in Redis.

    Tests run one after another on the session's Redis, so the blocked reads are this worker's.
    """
    want = len(worker.queue_keys) if queues is None else queues

    async def blocked() -> bool:
        if len(worker.idle) < want:
            return False
        clients = await worker.app.redis.client_list()
        return sum(c["cmd"] == "xreadgroup" and "b" in c["flags"] for c in clients) >= want

    await eventually(blocked, timeout, f"{want} fetcher(s) parked in XREADGROUP")


class Spawned:
    """The worker subprocesses a test started: ``start()`` one, ``close()`` them all at
    teardown (killed if still running), printing each one's output (shown when a test fails).
    The modules' ``workers`` fixtures wrap it with their own target and environment."""

    def __init__(self) -> None:
        self.started: list[WorkerProcess] = []

    def start(self, target: str, url: str, env: dict[str, str], *args: str) -> WorkerProcess:
        w = WorkerProcess(target, url, env, *args)
        self.started.append(w)
        return w

    def close(self) -> None:
        for w in self.started:
            w.close()
            print(f"--- worker {w.pid} (exit {w.proc.returncode}) ---\n{w.output}")


async def processes_parked(app: Any, *ws: WorkerProcess, timeout: float = 15) -> None:
    """Wait until every worker subprocess is parked in a blocking XREADGROUP (started, and
    idle), by the names their connections carry in CLIENT LIST."""

    async def all_blocked() -> bool:
        for w in ws:
            if not w.alive:
                raise AssertionError(f"worker {w.pid} exited early:\n{w.output}")
        blocked = {
            c["name"]
            for c in await app.redis.client_list()
            if c["cmd"] == "xreadgroup" and "b" in c["flags"]
        }
        return all(w.name in blocked for w in ws)

    pids = ", ".join(str(w.pid) for w in ws)
    await eventually(all_blocked, timeout, f"worker(s) {pids} parked on the stream")
