"""Helpers for tests that run workers as real subprocesses (``python -m aioq worker``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

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
