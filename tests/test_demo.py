"""`aioq demo`: the dashboard and `aioq info` line it points at, `--keep` until a signal, and
the demo without the dashboard's dependencies."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .helpers import ROOT, wait_until


class Demo:
    """``aioq demo ARGS`` in its own process group (no stdin, CI=true); a thread collects its
    output so the test can read lines as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aioq", "demo", *args],
            cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, ""):
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def printed(self, pattern: str, timeout: float = 30) -> str:
        """The first group of the first output line matching ``pattern``, waiting for it."""
        found: list[str] = []

        def match() -> bool:
            found[:] = [m[1] for line in self.lines if (m := re.match(pattern, line))][:1]
            return bool(found)

        try:
            wait_until(match, timeout)
        except AssertionError:
            raise AssertionError(f"no line matching {pattern!r} in:\n{self.output}") from None
        return found[0]

    def close(self) -> None:
        if self.proc.poll() is None:  # a failed test: take redis-server down with it
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def demo_keep() -> Iterator[Demo]:
    demo = Demo("--jobs", "40", "--keep")
    yield demo
    demo.close()


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def overview(client: httpx.Client) -> dict[str, Any]:
    r = client.get("api/overview")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_keep_serves_the_dashboard_until_a_signal(demo_keep: Demo, sig: signal.Signals) -> None:
    """With --keep the printed dashboard counts the batch, then the trickle; the printed
    `aioq info` line works; a signal stops it all (redis-server too) and exits 0."""
    url = demo_keep.printed(r"dashboard: (http://127\.0\.0\.1:\d+/)$")
    info = demo_keep.printed(r"aioq info: (.+)$")
    socket_path = Path(demo_keep.printed(r".*Redis at unix://(\S+)$"))
    demo_keep.printed(r"(Kept up until Ctrl-C)")
    [redis_pid] = children(demo_keep.proc.pid)
    assert "redis-server" in Path(f"/proc/{redis_pid}/cmdline").read_text()

    with httpx.Client(base_url=url, timeout=5) as client:
        assert "<html" in client.get("").text.lower()
        first: dict[str, Any] = {}

        def batch_counted() -> bool:
            first.update(overview(client))
            return bool(first["workers"]) and first["workers"][0]["done"] >= 40

        wait_until(batch_counted, timeout=15, interval=0.2)
        [queue] = first["queues"]
        assert queue["queue"] == "default"
        assert queue["failed"] >= 1  # the batch's undeliverable email
        assert any(j["task"] == "send_email" for j in first["failed"])
        done = first["workers"][0]["done"]
        wait_until(lambda: overview(client)["workers"][0]["done"] > done, 10, interval=0.2)

    r = subprocess.run(
        f"{info} --json", shell=True, cwd="/", capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["app"] == "demo"
    assert [w["pid"] for w in report["workers"]] == [demo_keep.proc.pid]

    demo_keep.proc.send_signal(sig)
    started = time.monotonic()
    assert demo_keep.proc.wait(15) == 0, demo_keep.output
    assert time.monotonic() - started < 5
    demo_keep._reader.join(5)
    assert "stopped: the worker, the dashboard and redis-server are gone" in demo_keep.output
    assert "Traceback" not in demo_keep.output
    assert not Path(f"/proc/{redis_pid}").exists()
    assert not socket_path.parent.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=2)


def test_without_keep_the_demo_finishes_and_names_the_option() -> None:
    """Without --keep the demo still shows the dashboard's URL, runs its batch and exits 0."""
    demo = Demo("--jobs", "8")
    try:
        assert demo.proc.wait(60) == 0, demo.output
        demo._reader.join(5)
    finally:
        demo.close()
    assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+/$", demo.output, re.M)
    assert "8 jobs in" in demo.output
    assert "aioq demo --keep" in demo.output


def test_missing_dashboard_dependencies_are_one_line(tmp_path: Path) -> None:
    """Without uvicorn the demo says so in one line and runs the rest as usual."""
    (tmp_path / "uvicorn.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'uvicorn'\", name='uvicorn')\n"
    )
    demo = Demo("--jobs", "8", env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    try:
        assert demo.proc.wait(60) == 0, demo.output
        demo._reader.join(5)
    finally:
        demo.close()
    lines = demo.output.splitlines()
    assert lines[0] == (
        "no dashboard: it needs uvicorn (pip install 'aioq-redis[dashboard]'); going on without it"
    )
    assert not any(line.startswith("dashboard:") for line in lines)
    assert "8 jobs in" in demo.output


def test_port_in_use_is_one_line_exit_2() -> None:
    """A --port that is taken fails at once, before any redis-server starts."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = Demo("--port", str(port))
        try:
            assert demo.proc.wait(30) == 2
            demo._reader.join(5)
        finally:
            demo.close()
    assert demo.output.strip().startswith(f"aioq: cannot serve the dashboard on 127.0.0.1:{port}")
    assert "Traceback" not in demo.output
