"""Redis Sentinel (``redis+sentinel://h1:p1,h2:p2/SERVICE/DB``): following the master.

Every connection asks the sentinels for the service's master as it opens, so after a failover
the next connection goes to the promoted replica: the client's connections (the command lane,
the result subscription and the pool behind ``app.redis``) fail when the old master dies,
reconnect with backoff while the sentinels elect a new one, and go on there; nothing is
restarted. A connection that finds its server demoted to a replica (``READONLY``) is dropped
and made again the same way.

Replication is asynchronous: a write the master acknowledged but had not yet sent to its
replica when it died is not on the new master. ``Options(durable=True)`` makes an enqueue
wait until a replica has it (``WAIT``), see ``docs/deploying.md``.
"""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.sentinel
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.connection import parse_url

from .connection import wrap_connection_class
from .hosts import HostsURL


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A sentinel pool that, like aioq's other pools, waits for a free connection rather than
    failing when every one is in use."""


class _SentinelRedis(Redis):
    """Closes the sentinel manager's own connections (to the sentinels) with the client."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for client in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            await client.aclose()


def _kwargs(url: HostsURL) -> tuple[dict[str, Any], dict[str, Any]]:
    """The master's connection settings (user, password, db, query) and the sentinels'
    (timeouts, TLS)."""
    node: dict[str, Any] = parse_url(url.node_url(*url.hosts[0]))  # type: ignore[no-untyped-call]
    for name in ("host", "port", "connection_class"):
        node.pop(name, None)
    sentinels = {k: v for k, v in node.items() if k.startswith(("socket_", "ssl_"))}
    if url.tls:
        sentinels["ssl"] = True
    return node, sentinels


def sentinel_client(url: HostsURL, max_connections: int, **pool_options: Any) -> Redis:
    """A client whose pool connects to the master the sentinels name."""
    node, sentinel_kwargs = _kwargs(url)
    base = SentinelManagedSSLConnection if url.tls else SentinelManagedConnection
    sentinel = Sentinel(list(url.hosts), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    pool = _BlockingSentinelPool(  # type: ignore[no-untyped-call]
        url.service,
        sentinel,
        connection_class=wrap_connection_class(base),
        max_connections=max_connections,
        **{**pool_options, **node},
    )
    return _SentinelRedis.from_pool(pool)


def sync_sentinel_client(url: HostsURL, **options: Any) -> redis.Redis:
    """A blocking client of the master (the lease thread's)."""
    node, sentinel_kwargs = _kwargs(url)
    sentinel = redis.sentinel.Sentinel(list(url.hosts), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    if url.tls:
        node["ssl"] = True
    master = sentinel.master_for(url.service, **{**node, **options})  # type: ignore[no-untyped-call]
    return cast(redis.Redis, master)
