"""One shared subscription per process that pushes job completions to waiting callers.

Every ``job.result()`` in a process registers on the same pub/sub connection (one per event
loop), subscribing to its job's ``done`` channel. ``watch`` returns only once Redis has
confirmed the subscription, and the caller reads the stored state *after* that: a job that
finished before the subscription is seen in the stored state, one that finishes after it is
pushed. A pushed message is handed to the waiter as it came (``Watch.message``: the worker's
scripts put the outcome in it, so the waiter need not read the record again, see
``job.py``). When the connection drops, every waiter is woken with no message to re-read the
stored state, since completions published while disconnected are lost.

The connection speaks RESP3 when the server does (Redis >= 6, Valkey): then a subscribed
connection may also run ordinary commands, and ``watch(channel, read)`` sends SUBSCRIBE and
the read of the stored state in one write. Redis runs a connection's commands in order, so
the read runs once the subscription holds: one round trip instead of two (confirmation,
then the read), which is most of an awaited job's overhead. Replies (not pushed frames) are
handed to the waiting reads in the order they were sent. Over RESP2 the read is the caller's,
after the confirmation, as before.

Commands are written straight to the connection's transport (redis-py's send path makes a
task and a timer per write, one more turn of the event loop), and an UNSUBSCRIBE waits for
the next write, or ``UNSUBSCRIBE_AFTER`` seconds: an awaited job then costs two writes (the
enqueue, the subscription), not three. A message for a channel nobody watches any more is
dropped.

A watchdog (``KEEPALIVE``) pings a connection that has been silent for a while and drops it
when even the ping gets no answer; the reconnection wakes every waiter to re-read the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .connection import pack

# RESP3 pushed frames (messages, subscribe confirmations) come as this type, replies as lists;
# without it (hiredis < 3.2) the two cannot be told apart and the listener stays on RESP2
_PUSH: type | None = getattr(hiredis, "PushNotification", None)

UNSUBSCRIBE_AFTER = 0.05  # seconds an UNSUBSCRIBE waits for a write to travel with

KEEPALIVE = 5.0
"""Seconds without a frame after which the subscription is pinged; when the ping brings
nothing back in as long, the connection is dropped and made again (a link whose bytes stopped
without closing would otherwise keep every waiter waiting for ever)."""

log = logging.getLogger("aioq.results")


class Watch:
    """One waiter's view of a channel: ``event`` is set on each message (``message`` holds
    its data) and on a reconnection (``message`` None: read the stored state). ``state`` is
    the reply of the read ``watch`` ran after subscribing (None: it did not, read it).
    ``error``: Redis refused the SUBSCRIBE (an ACL user without the channel): raise it."""

    __slots__ = ("error", "event", "message", "state")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.message: bytes | None = None
        self.state: Any = None
        self.error: Exception | None = None

    def push(self, message: bytes | None) -> None:
        self.message = message
        self.event.set()


class ResultListener:
    """Multiplexes every waiting ``job.result()`` of one event loop onto one connection."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._conn: AbstractConnection | None = None
        self._waiters: dict[bytes, set[Watch]] = {}
        self._confirm: dict[bytes, list[asyncio.Future[None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._resp3 = _PUSH is not None  # until a server refuses HELLO 3
        # what each command sent will answer, in order: a read's reply (its future), or a
        # SUBSCRIBE's confirmation, or its error reply (the channel's key): the answers come
        # in the order the commands went, so an error reply belongs to the oldest entry
        self._replies: deque[asyncio.Future[Any] | bytes] = deque()
        self._unsub: set[bytes] = set()  # channels to unsubscribe with the next write
        self._unsub_timer: asyncio.TimerHandle | None = None
        self._frames = 0  # frames read on the current connection (the watchdog's pulse)

    @contextlib.asynccontextmanager
    async def watch(self, channel: str, read: bytes | None = None) -> AsyncIterator[Watch]:
        """Subscribe to ``channel``; the watch is pushed each message (or a reconnection).

        ``read``: a packed command that reads the stored state. Over RESP3 it is sent behind
        the SUBSCRIBE on the same connection and its reply (an exception object for an error
        reply) is in ``Watch.state``; otherwise ``state`` stays None and the caller reads.
        """
        key = channel.encode()
        w = Watch()
        first = key not in self._waiters
        self._waiters.setdefault(key, set()).add(w)
        try:
            if read is not None and self._resp3:
                await self._subscribe_and_read(key, first, read, w)
            elif first:
                await self._subscribe(key)
            if w.error is not None:
                raise w.error
            yield w
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(w)
                if not waiters:
                    del self._waiters[key]
                    self._unsubscribe(key)

    async def _ensure(self) -> AbstractConnection:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(
                self._read_loop(), name="aioq-results"
            )
        await self._connected.wait()
        assert self._conn is not None
        return self._conn

    async def _subscribe_and_read(self, key: bytes, first: bool, read: bytes, w: Watch) -> None:
        conn = await self._ensure()
        if not self._resp3:  # the server refused HELLO 3 as the listener connected
            if first:
                await self._subscribe(key)
            return
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if first:
            self._replies.append(key)  # its confirmation, or its error reply, comes first
        self._replies.append(fut)  # before the write: replies come back in this order
        try:
            # a channel already subscribed (another waiter here): the read alone, which still
            # runs after that SUBSCRIBE, sent earlier on this connection
            await self._write(conn, pack("SUBSCRIBE", key) + read if first else read)
            w.state = await fut
        except (RedisConnectionError, RedisTimeoutError, OSError, ConnectionError):
            # the reader reconnects and resubscribes everything in _waiters; state stays None
            fut.cancel()  # if the write failed: the reader drops it with the lost connection
            self._connected.clear()
            await self._connected.wait()

    async def _subscribe(self, key: bytes) -> None:
        while True:
            conn = await self._ensure()
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._confirm.setdefault(key, []).append(fut)
            self._replies.append(key)
            try:
                await self._write(conn, pack("SUBSCRIBE", key))
                await fut
                return
            except ResponseError:  # refused: the waiters were told (_refuse)
                return
            except (RedisConnectionError, RedisTimeoutError, OSError, ConnectionError):
                # the reader reconnects and resubscribes everything in _waiters
                self._connected.clear()
                await self._connected.wait()
                return
            finally:
                futs = self._confirm.get(key)
                if futs is not None and fut in futs:
                    futs.remove(fut)
                    if not futs:
                        del self._confirm[key]

    def _unsubscribe(self, key: bytes) -> None:
        """UNSUBSCRIBE ``key`` with the next write, or in ``UNSUBSCRIBE_AFTER`` seconds."""
        self._unsub.add(key)
        if self._unsub_timer is None:
            self._unsub_timer = asyncio.get_running_loop().call_later(
                UNSUBSCRIBE_AFTER, self._flush_unsubscribe
            )

    def _flush_unsubscribe(self) -> None:
        self._unsub_timer = None
        conn = self._conn
        if conn is not None and self._connected.is_set():
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
                self._write_now(conn, b"")

    async def _write(self, conn: AbstractConnection, packed: bytes) -> None:
        writer = self._write_now(conn, packed)
        if writer.transport.get_write_buffer_size() > 65536:  # Redis reads slowly
            await writer.drain()

    def _write_now(self, conn: AbstractConnection, packed: bytes) -> asyncio.StreamWriter:
        """Write ``packed``, behind an UNSUBSCRIBE of the channels left (in one write)."""
        writer = conn._writer
        if writer is None or writer.transport.is_closing():
            raise RedisConnectionError("the result subscription's connection is closed")
        if self._unsub:
            left = [k for k in self._unsub if k not in self._waiters]
            self._unsub.clear()
            if left:
                packed = pack("UNSUBSCRIBE", *left) + packed
        if packed:
            writer.write(packed)
        return writer

    async def _read_loop(self) -> None:
        delay = 0.05
        watchdog: asyncio.Task[None] | None = None
        while True:
            try:
                conn = await self._connect()
            except (RedisConnectionError, RedisTimeoutError, OSError, ConnectionError) as exc:
                self._lost(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            try:
                self._unsub.clear()  # a new connection: nothing else is subscribed
                if self._waiters:
                    # one SUBSCRIBE each, so a refused channel (its error reply, in order)
                    # fails its own waiters only
                    pending = deque(self._waiters)
                    await self._write(conn, b"".join(pack("SUBSCRIBE", k) for k in pending))
                    while pending:  # confirmed before anyone re-reads the stored state
                        try:
                            msg = await self._read(conn)
                        except ResponseError as exc:
                            self._refuse(pending.popleft(), exc)
                            continue
                        if isinstance(msg, list) and msg[0] == b"subscribe" and pending:
                            pending.popleft()  # confirmations come in the order sent
                        self._dispatch(msg)
                self._conn = conn
                self._connected.set()
                self._wake_all()  # anything published while we were away is in the stored state
                delay = 0.05
                push = _PUSH if self._resp3 else None
                watchdog = asyncio.get_running_loop().create_task(self._watchdog(conn))
                while True:
                    try:
                        msg = await self._read(conn)
                    except ResponseError as exc:  # an error reply to a read: its waiter's
                        self._frames += 1
                        self._reply(exc)
                        continue
                    self._frames += 1
                    if push is not None and not isinstance(msg, push):
                        self._reply(msg)
                    else:
                        self._dispatch(msg)
            except asyncio.CancelledError:
                self._connected.clear()
                with contextlib.suppress(Exception):
                    await conn.disconnect()
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError, ConnectionError) as exc:
                self._lost(exc)
                with contextlib.suppress(Exception):
                    await conn.disconnect()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            finally:
                if watchdog is not None:
                    watchdog.cancel()
                    watchdog = None

    async def _watchdog(self, conn: AbstractConnection) -> None:
        """Ping ``conn`` after ``KEEPALIVE`` seconds without a frame; abort it when the ping
        brings nothing in as long (the read loop then reconnects)."""
        seen, pinged = -1, False
        while True:
            await asyncio.sleep(KEEPALIVE)
            if self._frames != seen:
                seen, pinged = self._frames, False
                continue
            writer = conn._writer
            if writer is None:
                return
            if pinged:
                log.debug("result subscription silent for %gs; reconnecting", 2 * KEEPALIVE)
                writer.transport.abort()
                return
            if self._resp3:  # the PONG is a reply, not a pushed frame: it has its place
                pong: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                pong.add_done_callback(_ignore)  # nobody awaits it, nor a lost connection
                self._replies.append(pong)
            with contextlib.suppress(RedisConnectionError, OSError):
                self._write_now(conn, pack("PING"))
            pinged = True

    async def _connect(self) -> AbstractConnection:
        """A new connection for the subscription: RESP3 unless the server refuses it."""
        pool = self._redis.connection_pool
        if self._resp3:
            kwargs = {**pool.connection_kwargs, "protocol": 3}
            conn: AbstractConnection = pool.connection_class(**kwargs)
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                return conn
            except ResponseError as exc:  # HELLO 3 refused (Redis < 6): RESP2 from now on
                log.debug("RESP3 refused (%s); the result subscription uses RESP2", exc)
                self._resp3 = False
                with contextlib.suppress(Exception):
                    await conn.disconnect()
        conn = pool.make_connection()  # type: ignore[no-untyped-call]
        await conn.connect()  # type: ignore[no-untyped-call]
        return conn

    def _lost(self, exc: BaseException) -> None:
        """The connection is gone: fail what waits for a confirmation or a reply."""
        self._connected.clear()
        log.debug("result subscription lost (%s); reconnecting", exc)
        for futs in self._confirm.values():
            for f in futs:
                if not f.done():
                    f.set_exception(RedisConnectionError(str(exc)))
        replies, self._replies = self._replies, deque()
        for entry in replies:
            if isinstance(entry, asyncio.Future) and not entry.done():
                entry.set_exception(RedisConnectionError(str(exc)))

    def _reply(self, value: Any) -> None:
        """A reply (not a pushed frame): the oldest command still waiting for one gets it. An
        error reply to a SUBSCRIBE (an ACL user without the channel) fails its waiters."""
        while self._replies:
            entry = self._replies.popleft()
            if isinstance(entry, bytes):  # a SUBSCRIBE: only an error replies (not pushed)
                if isinstance(value, Exception):
                    self._refuse(entry, value)
                    return
                continue  # its confirmation went by unseen: this reply is the next one's
            if not entry.done():  # its waiter was cancelled: the reply is dropped
                entry.set_result(value)
            return

    def _refuse(self, key: bytes, exc: Exception) -> None:
        """Redis refused to SUBSCRIBE ``key``: its waiters raise ``exc``, and it is no longer
        subscribed again after a reconnection."""
        log.debug("SUBSCRIBE %r refused: %s", key, exc)
        for fut in self._confirm.pop(key, ()):
            if not fut.done():
                fut.set_exception(exc)
        for w in self._waiters.pop(key, ()):
            w.error = exc
            w.push(None)

    @staticmethod
    async def _read(conn: AbstractConnection) -> object:
        # math.inf: block without a socket timeout; push_request: pub/sub frames are replies
        return await conn.read_response(
            timeout=math.inf, disconnect_on_error=False, push_request=True
        )

    def _dispatch(self, msg: object) -> None:
        if not isinstance(msg, list) or len(msg) < 3:
            return
        kind, channel = msg[0], msg[1]
        if kind == b"message":
            data = msg[2] if isinstance(msg[2], bytes) else None
            for w in self._waiters.get(channel, ()):
                w.push(data)
        elif kind == b"subscribe":
            if self._replies and self._replies[0] == channel:
                self._replies.popleft()  # confirmed: no reply of its own will come
            for fut in self._confirm.pop(channel, ()):
                if not fut.done():
                    fut.set_result(None)

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for w in waiters:
                w.push(None)

    async def aclose(self) -> None:
        if self._unsub_timer is not None:
            self._unsub_timer.cancel()
            self._unsub_timer = None
        if self._reader is not None:
            # cancelled until it ends: on Python 3.11 redis-py's asyncio.wait_for can swallow
            # one cancellation (see aioq.worker.core.cancel_and_wait)
            while not self._reader.done():
                self._reader.cancel()
                await asyncio.wait({self._reader}, timeout=0.1)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None


def _ignore(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved, so asyncio does not report it as never retrieved


async def subscribe_confirmed(pubsub: Any, channels: Sequence[bytes]) -> None:
    """SUBSCRIBE a redis-py ``PubSub`` to ``channels`` and return once Redis has confirmed
    each: state read after this cannot miss a message published after that read."""
    await pubsub.subscribe(*channels)
    confirmed = 0
    while confirmed < len(channels):
        msg = await pubsub.get_message(timeout=None)
        confirmed += msg is not None and msg.get("type") == "subscribe"
