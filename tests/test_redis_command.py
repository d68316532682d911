"""``aioq redis``: a local redis-server whose data and address outlive a restart (what
``--embedded-redis`` is not)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from .helpers import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(port: int, data_dir: Path) -> tuple[subprocess.Popen[str], redis.Redis]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aioq", "redis", "--port", str(port), "--dir", str(data_dir)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    deadline = time.monotonic() + 10
    while True:
        try:
            if client.ping():
                return proc, client
        except redis.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"aioq redis did not answer: {proc.communicate()[1]}")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)  # Ctrl-C, as the command says
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return err


@pytest.mark.timeout(60)
def test_redis_command_keeps_data_and_address_across_restarts(tmp_path: Path) -> None:
    """A key written before a restart is there after it, at the same URL; the start line
    names the URL and the data directory."""
    port, data_dir = _free_port(), tmp_path / "redis-data"
    proc, client = _start(port, data_dir)
    client.set("aioq-test", "kept")
    client.close()
    err = _stop(proc)
    assert f"aioq: redis-server at redis://127.0.0.1:{port}/0, data kept in {data_dir}" in err
    assert f"aioq: export AIOQ_REDIS_URL=redis://127.0.0.1:{port}/0" in err
    assert any(data_dir.iterdir())
    proc, client = _start(port, data_dir)
    try:
        assert client.get("aioq-test") == b"kept"
    finally:
        client.close()
        _stop(proc)
