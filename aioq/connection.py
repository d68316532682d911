"""The Redis client aioq talks through: pool, reconnection policy, and C-speed packing.

redis-py's asyncio connections pack every command in pure Python, which costs more than the
rest of a worker's per-job work for the argument-heavy script calls aioq makes (about 9 us per
job of a completion batch). aioq's connections pack with ``hiredis.pack_command`` (C) instead;
anything it cannot pack (``None``, ``bool``) falls back to redis-py, which raises its usual
error.
"""

from __future__ import annotations

from typing import Any

from hiredis import pack_command as _hiredis_pack  # redis[hiredis] is a dependency
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def _packing(cls: type[Any]) -> type[Any]:
    """A subclass of a redis-py connection class that packs commands with hiredis."""

    def pack_command(self: Any, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # "CLIENT KILL" is two words
            args = (*args[0].split(), *args[1:])
        try:
            return [_hiredis_pack(args)]
        except TypeError:
            return cls.pack_command(self, *args)  # type: ignore[no-any-return]

    return type(cls.__name__, (cls,), {"pack_command": pack_command})


def make_client(url: str, max_connections: int) -> Redis:
    """A client for ``url`` whose commands retry with backoff through reconnections.

    The pool blocks (up to 20 s) rather than failing when every connection is in use, so a
    burst of concurrent enqueues waits instead of erroring.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=20,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=6),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    pool.connection_class = _packing(pool.connection_class)
    return Redis.from_pool(pool)
