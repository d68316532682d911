"""A private redis-server for ``aioq demo``, ``aioq worker --embedded-redis`` and tests, and
the arguments of ``aioq redis``'s persistent one.

It listens only on a unix socket in a fresh temporary directory, keeps nothing on disk, and
is stopped (and its directory removed) on exit. It is used only when asked for: a configured
Redis is never replaced by one.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


class RedisServerNotFound(RuntimeError):
    pass


def redis_server_path() -> str:
    """The redis-server on PATH; ``RedisServerNotFound`` says how to get one."""
    found = shutil.which("redis-server")
    if not found:
        raise RedisServerNotFound(
            "redis-server is not on PATH: install it (Debian/Ubuntu: "
            "`sudo apt-get install redis-server`) or point AIOQ_REDIS_URL at a Redis"
        )
    return found


def persistent_args(executable: str, port: int, data_dir: Path) -> list[str]:
    """``aioq redis``: the opposite of ``EmbeddedRedis`` for a developer's machine, a fixed
    address (loopback only) and an append-only file in ``data_dir``, so jobs, results and the
    URL survive a restart."""
    return [
        executable,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir.resolve()),
        "--appendonly", "yes",
    ]  # fmt: skip


class EmbeddedRedis:
    """``with EmbeddedRedis() as r: r.url`` - a redis-server on a unix socket."""

    def __init__(self, executable: str | None = None, port: int = 0) -> None:
        self.executable = executable or redis_server_path()
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="aioq-redis-"))
        self.socket = self.dir / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        args = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"),
            "--maxclients", "10000",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode()
                log = (
                    (self.dir / "redis.log").read_text()
                    if (self.dir / "redis.log").exists()
                    else ""
                )
                self.stop()
                raise RuntimeError(f"redis-server exited at start: {err or log}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on {self.socket} in {timeout}s")
            time.sleep(0.01)
        return self

    def _answers(self) -> bool:
        import socket

        if not self.socket.exists():
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(0.5)
            s.connect(str(self.socket))
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False
        finally:
            s.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
