"""One shared subscription per process that pushes job completions to waiting callers.

Every ``job.result()`` in a process registers on the same pub/sub connection (one per event
loop), subscribing to its job's ``done`` channel. ``watch`` returns only once Redis has
confirmed the subscription, and the caller reads the stored state *after* that: a job that
finished before the subscription is seen in the stored state, one that finishes after it is
pushed. When the connection drops, every waiter is woken to re-read the stored state, since
completions published while disconnected are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("aioq.results")


class ResultListener:
    """Multiplexes every waiting ``job.result()`` of one event loop onto one connection."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._conn: AbstractConnection | None = None
        self._waiters: dict[bytes, set[asyncio.Event]] = {}
        self._confirm: dict[bytes, list[asyncio.Future[None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    @contextlib.asynccontextmanager
    async def watch(self, channel: str) -> AsyncIterator[asyncio.Event]:
        """Subscribe to ``channel``; the event is set on each message (or reconnection)."""
        key = channel.encode()
        event = asyncio.Event()
        first = key not in self._waiters
        self._waiters.setdefault(key, set()).add(event)
        try:
            if first:
                await self._subscribe(key)
            yield event
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[key]
                    await self._unsubscribe(key)

    async def _ensure(self) -> AbstractConnection:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(
                self._read_loop(), name="aioq-results"
            )
        await self._connected.wait()
        assert self._conn is not None
        return self._conn

    async def _subscribe(self, key: bytes) -> None:
        while True:
            conn = await self._ensure()
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._confirm.setdefault(key, []).append(fut)
            try:
                await conn.send_command("SUBSCRIBE", key)
                await fut
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

    async def _unsubscribe(self, key: bytes) -> None:
        conn = self._conn
        if conn is None or not self._connected.is_set():
            return
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
            await conn.send_command("UNSUBSCRIBE", key)

    async def _read_loop(self) -> None:
        delay = 0.05
        while True:
            pool = self._redis.connection_pool
            conn: AbstractConnection = pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                if self._waiters:
                    keys = list(self._waiters)
                    await conn.send_command("SUBSCRIBE", *keys)
                    pending = set(keys)
                    while pending:  # confirmed before anyone re-reads the stored state
                        msg = await self._read(conn)
                        if isinstance(msg, list) and msg[0] == b"subscribe":
                            pending.discard(msg[1])
                        self._dispatch(msg)
                self._conn = conn
                self._connected.set()
                self._wake_all()  # anything published while we were away is in the stored state
                delay = 0.05
                while True:
                    msg = await self._read(conn)
                    self._dispatch(msg)
            except asyncio.CancelledError:
                self._connected.clear()
                with contextlib.suppress(Exception):
                    await conn.disconnect()
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError, ConnectionError) as exc:
                self._connected.clear()
                log.debug("result subscription lost (%s); reconnecting", exc)
                with contextlib.suppress(Exception):
                    await conn.disconnect()
                for futs in self._confirm.values():
                    for f in futs:
                        if not f.done():
                            f.set_exception(RedisConnectionError(str(exc)))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

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
            for event in self._waiters.get(channel, ()):
                event.set()
        elif kind == b"subscribe":
            for fut in self._confirm.pop(channel, ()):
                if not fut.done():
                    fut.set_result(None)

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def aclose(self) -> None:
        if self._reader is not None:
            # cancelled until it ends: on Python 3.11 redis-py's asyncio.wait_for can swallow
            # one cancellation (see aioq.worker.core.cancel_and_wait)
            while not self._reader.done():
                self._reader.cancel()
                await asyncio.wait({self._reader}, timeout=0.1)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None


async def subscribe_confirmed(pubsub: Any, channels: Sequence[bytes]) -> None:
    """SUBSCRIBE a redis-py ``PubSub`` to ``channels`` and return once Redis has confirmed
    each: state read after this cannot miss a message published after that read."""
    await pubsub.subscribe(*channels)
    confirmed = 0
    while confirmed < len(channels):
        msg = await pubsub.get_message(timeout=None)
        confirmed += msg is not None and msg.get("type") == "subscribe"
