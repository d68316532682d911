"""The Redis client aioq talks through: pool, reconnection policy, and C-speed packing.

redis-py's asyncio connections pack every command in pure Python, which costs more than the
rest of a worker's per-job work for the argument-heavy script calls aioq makes (about 9 us per
job of a completion batch). aioq's connections pack with ``hiredis.pack_command`` (C) instead;
anything it cannot pack (``None``, ``bool``) falls back to redis-py, which raises its usual
error.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
from collections import deque
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import redis
from hiredis import pack_command as _hiredis_pack  # redis[hiredis] is a dependency
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .hosts import is_hosts_url, parse_hosts_url

CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection and, until the server has once answered like a Redis, to
finish its handshake (a ``socket_connect_timeout=`` query parameter of the URL overrides it)."""

_SCHEMES = ("redis", "rediss", "unix")

TLS_PARAMETERS = frozenset(
    p for p in inspect.signature(SSLConnection.__init__).parameters if p.startswith("ssl_")
)
"""The TLS query parameters a ``rediss://`` URL may carry (``ssl_ca_certs=``, ``ssl_certfile=``,
``ssl_keyfile=``, ``ssl_cert_reqs=``, ...): those redis-py's asyncio TLS connection takes,
which its blocking one (``enqueue_sync``) takes too."""

_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return parts._replace(netloc=f"{name}:***@{host}").geturl()


def check_url(url: str, source: str = "redis_url") -> str:
    """Return ``url`` if redis-py would connect where it says; else ``ValueError`` naming it.

    redis-py reads some mistakes as defaults (``redis:/host:6400`` is localhost:6379), which
    could talk to the wrong Redis, so the shape is checked here first.
    """

    def bad(why: str) -> ValueError:
        return ValueError(f"{source} {redacted(url)!r} is not a Redis URL: {why}")

    if not isinstance(url, str):
        raise ValueError(f"{source} must be a string, got {type(url).__name__}")
    if is_hosts_url(url):  # redis+cluster://, redis+sentinel:// (hosts.py)
        hosts = parse_hosts_url(url, source)
        try:  # its user, password and query, as a data node's URL has them
            check_url(hosts.node_url(*hosts.hosts[0]), source)
        except ValueError as exc:
            raise bad(str(exc).partition(" is not a Redis URL: ")[2] or str(exc)) from None
        return url
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        scheme = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise bad(
            f"{scheme} (use redis://HOST[:PORT][/DB], rediss://, unix:///PATH, "
            "redis+cluster://HOST:PORT,... or redis+sentinel://HOST:PORT,.../SERVICE/DB)"
        )
    if not url.startswith(f"{parts.scheme}://"):
        raise bad(f"expected {parts.scheme}:// (two slashes) before the host or path")
    try:
        port = parts.port
    except ValueError:
        raise bad("the port is not a number from 0 to 65535") from None
    db: str | None = None
    if parts.scheme == "unix":
        if parts.hostname or port is not None or not parts.path:
            raise bad("a unix socket URL is unix:///absolute/path/to/redis.sock")
    else:
        if not parts.hostname:
            raise bad("no host (expected redis://HOST[:PORT][/DB])")
        db = parts.path.lstrip("/") or None
    query = parse_qs(parts.query)
    for name in query:
        if not name.startswith("ssl_"):
            continue
        if parts.scheme != "rediss":
            raise bad(f"{name}= is a TLS parameter, and TLS needs rediss://")
        if name not in TLS_PARAMETERS:
            raise bad(
                f"unknown TLS parameter {name!r} (known: {', '.join(sorted(TLS_PARAMETERS))})"
            )
    dbs = query.get("db", [])
    for value in [db, *dbs]:
        if value is not None and not (value.isascii() and value.isdigit()):
            raise bad(f"the database must be a non-negative integer, got {value!r}")
    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise bad(str(exc)) from None
    return url


def tls_hint(url: str, error: str) -> str:
    """What a failed connection's error most likely means for a TLS set-up, to add to the
    message (" (...)"), or "". The files are checked here, when connecting failed, not when
    the ``App`` is made: an app is often imported where the certificates are not mounted."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    reset = "reset by peer" in error or "Connection closed by server" in error
    if parts.scheme != "rediss":
        if reset:
            return " (a server that speaks only TLS resets plain connections: is it rediss://?)"
        return ""
    for name in _TLS_FILES:
        for path in query.get(name, [])[-1:]:
            if not os.path.isfile(path):
                return f" ({name}: no such file {path!r})"
    if "CERTIFICATE_VERIFY_FAILED" in error:
        if "mismatch" in error:
            return (
                " (the server's certificate does not name the URL's host: connect by a name "
                "it holds)"
            )
        return (
            " (the server's certificate is not signed by a CA this client trusts: give the CA "
            "with ssl_ca_certs=PATH)"
        )
    if "ssl_certfile" not in query and (
        reset or "CERTIFICATE_REQUIRED" in error or "EOF occurred" in error
    ):
        return (
            " (the server asks for a client certificate, tls-auth-clients: give "
            "ssl_certfile=PATH&ssl_keyfile=PATH)"
        )
    if "PEM lib" in error:
        return (
            " (ssl_certfile/ssl_keyfile are not a PEM certificate and its private key: a "
            "certificate file without the key needs ssl_keyfile=)"
        )
    return ""


class NotRedis(RedisError):
    """The server at the URL did not answer the first handshake like a Redis (garbage, or
    nothing within the connect timeout). Not retried: another try would get the same."""


class MissingDatabase(RedisError):
    """The server refused to ``SELECT`` the URL's database (it has fewer)."""


def wrap_connection_class(cls: type[Any]) -> type[Any]:
    """A subclass of a redis-py connection class that packs commands with hiredis and, until
    one connection of its pool has once been answered like a Redis, bounds the handshake.

    Without the bound, a port that accepts and never answers costs the socket timeout on
    every one of the connect retries (over 35 s, several minutes through the command lane);
    with it the first connection fails once, within the connect timeout. After the server
    has answered once, slow handshakes are retried as before (a Redis under load or
    restarting is still a Redis).
    """
    verified = False

    def pack_command(self: Any, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # "CLIENT KILL" is two words
            args = (*args[0].split(), *args[1:])
        try:
            return [_hiredis_pack(args)]
        except TypeError:
            return cls.pack_command(self, *args)  # type: ignore[no-any-return]

    async def on_connect_check_health(self: Any, check_health: bool = True) -> None:
        nonlocal verified
        try:
            if verified:
                await cls.on_connect_check_health(self, check_health)
                return
            seconds = self.socket_connect_timeout or CONNECT_TIMEOUT
            try:
                async with asyncio.timeout(seconds):
                    await cls.on_connect_check_health(self, check_health)
                    # the handshake may have read nothing (RESP2, no auth, db 0): ask once
                    await self.send_command("PING", check_health=False)
                    if await self.read_response() not in (b"PONG", "PONG"):
                        raise InvalidResponse("PING was not answered with PONG")
            except (TimeoutError, RedisTimeoutError) as exc:
                raise NotRedis(f"no Redis reply within {seconds:g}s of connecting") from exc
            except InvalidResponse as exc:
                raise NotRedis(f"the server there does not speak Redis ({exc})") from exc
            verified = True
        except ResponseError as exc:
            if "DB index" not in str(exc):
                raise
            raise MissingDatabase(f"the server has no database {self.db} ({exc})") from exc

    async def connect_check_health(self: Any, *args: Any, **kwargs: Any) -> None:
        final: RedisError | None = None
        try:
            await cls.connect_check_health(self, *args, **kwargs)
        except RedisConnectionError as exc:
            # a unix socket connection runs the handshake inside its connect, whose errors
            # redis-py wraps as ConnectionError, which is retried: unwrap what is final
            if not isinstance(exc.__cause__, (NotRedis, MissingDatabase)):
                raise
            final = exc.__cause__
        if final is not None:  # raised out here, so its context is not the wrapper
            await self.disconnect()
            raise final

    return type(
        cls.__name__,
        (cls,),
        {
            "pack_command": pack_command,
            "on_connect_check_health": on_connect_check_health,
            "connect_check_health": connect_check_health,
        },
    )


def make_client(url: str, max_connections: int) -> Redis:
    """A client for ``url`` whose commands retry with backoff through reconnections.

    The pool blocks (up to 20 s) rather than failing when every connection is in use, so a
    burst of concurrent enqueues waits instead of erroring. A sentinel URL gives a client of
    the master the sentinels name (``sentinel.py``; a cluster's is ``cluster.py``'s).
    """
    options: dict[str, Any] = dict(
        timeout=20,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=6),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_connect_timeout=CONNECT_TIMEOUT,  # the URL's own query parameter wins
    )
    if is_hosts_url(url):
        from .sentinel import sentinel_client

        return sentinel_client(parse_hosts_url(url), max_connections, **options)
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, **options)
    pool.connection_class = wrap_connection_class(pool.connection_class)
    return Redis.from_pool(pool)


def sync_client(url: str, **options: Any) -> redis.Redis:
    """A blocking client for any of aioq's URLs (the lease thread's own connection)."""
    if is_hosts_url(url):
        hosts = parse_hosts_url(url)
        if hosts.cluster:
            from .cluster import sync_cluster_client

            return sync_cluster_client(hosts, **options)
        from .sentinel import sync_sentinel_client

        return sync_sentinel_client(hosts, **options)
    return redis.Redis.from_url(url, **options)


class Lane(Protocol):
    """What ``Scripts`` sends through: a ``CommandLane``, or a cluster's ``ClusterLane``."""

    user: str | None  # the ACL user it connects as (named when Redis refuses a command)

    async def call(
        self, packed: bytes | list[bytes], replies: int = 1, *, idempotent: bool = True
    ) -> list[Any]: ...

    async def aclose(self) -> None: ...


class ReplyLost(RedisConnectionError):
    """The connection failed after a non-idempotent command was written: it may have run."""


class CommandLane:
    """A few dedicated connections for the producer's hot path (enqueue).

    redis-py's general path costs more per call than the round trip itself on loopback: pool
    locks, a readiness poll on every checkout, several timers, observability hooks. An enqueue
    is one pre-packed EVALSHA that is safe to resend (it is idempotent on the job id), so it
    goes over these connections directly: an idle connection is popped from a list (the event
    loop is single-threaded, so no lock), the command written, the reply read. A connection
    error disconnects and retries with backoff; a reply that may still be in flight when the
    caller is cancelled makes the connection unusable, so it is closed, never reused.
    """

    def __init__(self, redis: Redis, size: int, retries: int = 6) -> None:
        self._pool = redis.connection_pool
        self.user: str | None = self._pool.connection_kwargs.get("username")
        self._idle: list[AbstractConnection] = []
        self._open = 0
        self._size = max(1, size)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._retries = retries

    async def call(
        self, packed: bytes | list[bytes], replies: int = 1, *, idempotent: bool = True
    ) -> list[Any]:
        """Send pre-packed command(s) and return their ``replies`` replies (errors included
        as exception objects, as redis-py pipelines do).

        Connection errors are retried with backoff. A call that is not ``idempotent`` (a script
        that starts jobs: running it twice is not running it once) is resent only when it
        cannot have reached Redis (the connection failed to open); once its bytes may have
        been written, a connection error raises ``ReplyLost`` instead, and the caller recovers
        what the lost reply held (``Scripts.recover``).
        """
        delay = 0.02
        for attempt in range(self._retries + 1):
            conn = await self._checkout()
            sent = False
            try:
                if not conn.is_connected:
                    await conn.connect()  # type: ignore[no-untyped-call]
                sent = True
                await _write(conn, packed)
                out: list[Any] = []
                for _ in range(replies):
                    try:
                        out.append(await conn.read_response(disable_decoding=True))
                    except ResponseError as exc:  # an error reply: the stream stays in step
                        out.append(exc)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                await self._discard(conn)
                if sent and not idempotent:
                    raise ReplyLost(f"reply lost ({exc}); the command may have run") from exc
                if attempt == self._retries:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            except BaseException:
                await self._discard(conn)  # cancelled mid-reply: the stream is out of step
                raise
            self._checkin(conn)
            return out
        raise AssertionError("unreachable")  # pragma: no cover

    async def _checkout(self) -> AbstractConnection:
        while not self._idle and self._open >= self._size:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except BaseException:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                raise
        if self._idle:
            return self._idle.pop()
        self._open += 1
        conn: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        return conn

    def _checkin(self, conn: AbstractConnection) -> None:
        self._idle.append(conn)
        self._wake()

    async def _discard(self, conn: AbstractConnection) -> None:
        self._open -= 1
        self._wake()
        with contextlib.suppress(Exception):
            await conn.disconnect()

    def _wake(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.disconnect()
        self._open -= len(idle)


async def _write(conn: AbstractConnection, packed: bytes | list[bytes]) -> None:
    """Write to the connection's transport directly: redis-py's send path wraps every write in
    ``asyncio.wait_for`` (a task and a turn of the event loop per call, on Python 3.11), which
    costs an awaited job's round trip more than the write itself. Waits only when the
    transport's buffer is full (Redis reads slowly)."""
    writer = conn._writer
    if writer is None or writer.transport.is_closing():
        raise RedisConnectionError("connection closed")
    if isinstance(packed, bytes):
        writer.write(packed)
    else:
        writer.writelines(packed)
    if writer.transport.get_write_buffer_size() > 65536:
        await writer.drain()


def pack(*args: Any) -> bytes:
    """One command in RESP, packed by hiredis."""
    packed: bytes = _hiredis_pack(args)
    return packed
