"""redis-server processes configured as production runs them, for the TLS and ACL tests: a
throwaway CA with server and client certificates (``openssl``), a TLS-only server, and a
server on a TCP port for ACL users. Each is stopped by its PID."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aioq.embedded import redis_server_path


@dataclass(frozen=True)
class Certs:
    """PEM files of a throwaway CA, a server certificate for 127.0.0.1/localhost, and a
    client certificate (what ``tls-auth-clients yes`` asks for), all signed by the CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(directory: Path) -> Certs:
    """Make the CA and certificates with openssl (EC keys: fast), valid for two days."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not on PATH (Debian: apt-get install openssl)")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=aioq test CA")  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for who, ext in (("server", ["-extfile", "server.ext"]), ("client", [])):
        run("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={who}")
        run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{who}.crt", "-days", "2", *ext)  # fmt: skip
    d = directory
    return Certs(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt",
                 d / "client.key")  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisProcess:
    """A redis-server on a loopback TCP port (TLS-only when given ``certs``), nothing on disk."""

    def __init__(self, certs: Certs | None = None, *extra: str) -> None:
        self.certs = certs
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="aioq-redis-"))
        args = [redis_server_path(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")]  # fmt: skip
        if certs is None:
            args += ["--port", str(self.port)]
        else:
            args += [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key),
                "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "yes",
            ]  # fmt: skip
        quiet = subprocess.DEVNULL
        self.proc = subprocess.Popen([*args, *extra], stdin=quiet, stdout=quiet, stderr=quiet)
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.dir / "redis.log"
                text = log.read_text() if log.exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}: {text}")
            time.sleep(0.02)

    def url(self, user: str | None = None, password: str | None = None, cert: bool = True) -> str:
        """``redis://`` (``rediss://`` with the CA, and the client certificate unless
        ``cert`` is false), as ``user:password`` when given."""
        auth = f"{user}:{password}@" if user else ""
        if self.certs is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        query = f"ssl_ca_certs={self.certs.ca}"
        if cert:
            query += f"&ssl_certfile={self.certs.client_cert}&ssl_keyfile={self.certs.client_key}"
        return f"rediss://{auth}127.0.0.1:{self.port}/0?{query}"

    def _answers(self) -> bool:
        try:
            raw = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
        except OSError:
            return False
        s: socket.socket = raw
        try:
            if self.certs is not None:
                ctx = ssl.create_default_context(cafile=str(self.certs.ca))
                ctx.load_cert_chain(str(self.certs.client_cert), str(self.certs.client_key))
                s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")  # takes raw's socket over
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False
        finally:
            s.close()
            raw.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir)


@contextlib.contextmanager
def redis_process(certs: Certs | None = None, *extra: str) -> Iterator[RedisProcess]:
    server = RedisProcess(certs, *extra)
    try:
        yield server
    finally:
        server.stop()
