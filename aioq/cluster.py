"""Redis Cluster (``redis+cluster://h1:p1,h2:p2``): routing aioq's traffic by hash slot.

Every key of one queue carries the queue's hash tag (``keys.py``), so a queue lives in one slot
of one master and every script of it runs there whole. Different queues spread over the
masters by their tags; a worker serving several queues reads each from its node.

* ``ClusterLane`` is the ``CommandLane`` of a cluster: one lane per master, each command
  (already packed) routed by the slot of its first key, the commands of one call for one
  node written together, in order (so a blocking read and the script behind it still share a
  connection). ``SCRIPT LOAD`` goes to every master; a command with no key (``WAIT``) goes
  with the one before it. Redirections are followed: ``MOVED``
  (the slot has moved: the slot map is updated and reloaded), ``ASK`` (a slot migrating:
  ``ASKING`` and the command to the importing node), ``TRYAGAIN`` and ``CLUSTERDOWN`` (waited
  out, with backoff, up to ``REDIRECT_TIMEOUT``). A redirected command did not run, so even a
  script that starts jobs is resent.
* While a slot migrates, some of a queue's keys are on each node. Redis runs a script there
  only if all its *declared* keys are present; the keys a script names by data (a job's
  record) are not declared, and a script that reached one already moved would fail half-way,
  its first writes kept. So every script also declares ``QueueKeys.guard``, a key never
  written: during a migration it is missing on both nodes, Redis answers ``TRYAGAIN`` to every
  script of the queue (the lane waits), and no script runs against half of a queue. Once the
  slot has moved, the scripts run on the new node. The queue pauses for the migration of its
  slot (about 1 s per 10,000 keys with ``redis-cli --cluster reshard``); nothing is lost.
* ``ClusterResults``: job outcomes are published with ``PUBLISH``, which a cluster delivers to
  every node; each process subscribes once per node it has waited on, on the node of each
  job's slot, so the read of the job's state goes behind the SUBSCRIBE in one round trip as on
  one server. A subscription whose node is gone moves to another master (it hears the same).
* ``cluster_client``: ``app.redis`` is redis-py's ``RedisCluster`` (it follows redirections
  for the CLI, the dashboard and the worker's housekeeping); ``sync_cluster_client`` is the
  lease thread's.

Redis Cluster has database 0 only, and no unix sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import redis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, ClusterPubSub, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.connection import parse_url
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .connection import CommandLane, make_client, pack
from .hosts import Address, HostsURL
from .results import ResultListener, Watch

log = logging.getLogger("aioq.cluster")

SLOTS = 16384

REDIRECT_TIMEOUT = 30.0
"""Seconds a command keeps being resent while its slot migrates (``TRYAGAIN``) or the cluster
is down (``CLUSTERDOWN``) before the error reaches the caller."""

_ASKING = pack("ASKING")
_BROADCAST = b""  # the "key" of a command every master must run (SCRIPT LOAD)


def _node_kwargs(url: HostsURL) -> dict[str, Any]:
    """The connection settings of a data node, from the URL's user, password and query."""
    host, port = url.hosts[0]
    kwargs: dict[str, Any] = parse_url(url.node_url(host, port))  # type: ignore[no-untyped-call]
    for name in ("host", "port", "db", "connection_class"):
        kwargs.pop(name, None)
    if url.tls:
        kwargs["ssl"] = True
    return kwargs


class _PubSub(ClusterPubSub):
    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        # redis-py routes a SUBSCRIBE by its slot map, which is empty (a KeyError) until the
        # client's first command has loaded it
        await self.cluster.initialize()
        return await super().execute_command(*args, **kwargs)


class _RedisCluster(RedisCluster):
    def pubsub(
        self,
        node: ClusterNode | None = None,
        host: str | None = None,
        port: int | None = None,
        **kwargs: Any,
    ) -> ClusterPubSub:
        return _PubSub(self, node=node, host=host, port=port, **kwargs)


def cluster_client(url: HostsURL, max_connections: int) -> Redis:
    """``app.redis`` of a cluster URL: redis-py's ``RedisCluster`` (typed as ``Redis``: the
    commands aioq uses are the same)."""
    client = _RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in url.hosts],
        max_connections=max_connections,
        **{"socket_connect_timeout": 5.0, **_node_kwargs(url)},
    )
    return cast(Redis, client)


def sync_cluster_client(url: HostsURL, **options: Any) -> redis.Redis:
    """A blocking client of the cluster (the lease thread's)."""
    client = redis.RedisCluster(
        startup_nodes=[
            redis.cluster.ClusterNode(h, p)  # type: ignore[no-untyped-call]
            for h, p in url.hosts
        ],
        **{**_node_kwargs(url), **options},
    )
    return cast(redis.Redis, client)


async def scan(redis: Redis, cursor: int, match: str, count: int) -> tuple[int, list[bytes]]:
    """One SCAN step over the keys matching ``match``, whose hash tag names one slot: in a
    cluster, on the node holding it (redis-py would scan every node, each its own cursor)."""
    client: Any = redis  # app.redis is typed Redis, and is a RedisCluster for a cluster URL
    if not isinstance(client, RedisCluster):
        found: tuple[int, list[bytes]] = await client.scan(cursor, match=match, count=count)
        return found
    cursors: Any
    keys: Any
    node = client.get_node_from_key(match)
    cursors, keys = await client.scan(cursor, match=match, count=count, target_nodes=node)
    return int(next(iter(cursors.values()))), list(keys)  # the cursor comes keyed by node


class _Node:
    """One master: a client, the lane the hot path uses, and a lane that asks once (for the
    slot map, where a dead node should cost one try, not a round of retries)."""

    def __init__(self, url: str, max_connections: int, lane_size: int) -> None:
        self.redis = make_client(url, max_connections)
        self.lane = CommandLane(self.redis, lane_size)
        self.probe = CommandLane(self.redis, 1, retries=0)

    async def aclose(self) -> None:
        await self.lane.aclose()
        await self.probe.aclose()
        await self.redis.aclose()


class Topology:
    """Which master serves each slot: ``CLUSTER SLOTS`` from any node that answers, corrected
    by ``MOVED`` replies at once and reloaded after them (one load at a time)."""

    def __init__(self, url: HostsURL, max_connections: int) -> None:
        self.url = url
        self._max_connections = max_connections
        self._lane_size = min(max_connections, 64)
        self._nodes: dict[Address, _Node] = {}
        self._slots: list[Address | None] = []
        self._stale = True
        self._loading: asyncio.Task[None] | None = None

    def node(self, addr: Address) -> _Node:
        node = self._nodes.get(addr)
        if node is None:
            node = self._nodes[addr] = _Node(
                self.url.node_url(*addr), self._max_connections, self._lane_size
            )
        return node

    def masters(self) -> list[Address]:
        """The masters serving slots, as last loaded (the URL's hosts before any load)."""
        found = {a for a in self._slots if a is not None}
        return sorted(found) if found else list(self.url.hosts)

    async def owner(self, slot: int | None) -> Address:
        """The master serving ``slot`` (any master for ``None``)."""
        if self._stale:
            await self.load()
        return self.owner_now(slot)

    def owner_now(self, slot: int | None) -> Address:
        """``owner`` from the slot map as loaded (the caller loads it first when stale)."""
        if slot is None:
            return self.masters()[0]
        addr = self._slots[slot] if self._slots else None
        if addr is None:
            raise RedisConnectionError(f"CLUSTERDOWN no master serves slot {slot}")
        return addr

    def moved(self, slot: int, addr: Address) -> None:
        if self._slots:
            self._slots[slot] = addr
        self._stale = True  # a moved slot rarely moves alone (a reshard, a failover)

    def stale(self) -> None:
        self._stale = True

    @property
    def stale_now(self) -> bool:
        """Whether the slot map must be loaded before it is read."""
        return self._stale

    async def load(self) -> None:
        if self._loading is None or self._loading.done():
            self._loading = asyncio.get_running_loop().create_task(self._load())
        await asyncio.shield(self._loading)

    async def _load(self) -> None:
        errors: list[str] = []
        for addr in dict.fromkeys([*self.masters(), *self.url.hosts]):
            try:
                (reply,) = await self.node(addr).probe.call(pack("CLUSTER", "SLOTS"))
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                errors.append(f"{addr[0]}:{addr[1]}: {exc}")
                continue
            if isinstance(reply, Exception):
                errors.append(f"{addr[0]}:{addr[1]}: {reply}")
                continue
            slots: list[Address | None] = [None] * SLOTS
            for start, end, master, *_ in reply:
                owner = (master[0].decode() or addr[0], int(master[1]))
                slots[start : end + 1] = [owner] * (end + 1 - start)
            self._slots, self._stale = slots, False
            log.debug("cluster slot map from %s:%d: masters %s", *addr, self.masters())
            return
        raise RedisConnectionError(f"no cluster node answered CLUSTER SLOTS ({'; '.join(errors)})")

    async def aclose(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            await node.aclose()


def command_key(packed: bytes) -> bytes | None:
    """The key a packed command is routed by: its first key; ``_BROADCAST`` for SCRIPT LOAD
    (every master needs the script); None for another keyless command (any master)."""
    name, *args = _args(packed, 4)
    name = name.upper()
    if name in (b"EVALSHA", b"EVAL", b"EVALSHA_RO", b"EVAL_RO", b"FCALL"):
        return args[2] if len(args) > 2 and args[1] != b"0" else None
    if name in (b"XREADGROUP", b"XREAD"):
        for i, arg in enumerate(words := _args(packed, 16)):
            if arg.upper() == b"STREAMS":
                return words[i + 1]
        return None
    if name == b"SCRIPT":
        return _BROADCAST
    if name in (b"XGROUP", b"XINFO", b"OBJECT", b"MEMORY"):
        return args[1] if len(args) > 1 else None
    if name in (b"PING", b"TIME", b"CLUSTER", b"INFO", b"ASKING", b"READONLY", b"WAIT"):
        return None
    return args[0] if args else None


def _args(packed: bytes, most: int) -> list[bytes]:
    """The first ``most`` arguments of a RESP-packed command (``*<n>`` then ``$<len>`` bulk
    strings), without parsing the rest (a batch of 200 jobs is thousands)."""
    end = packed.index(b"\r\n")
    count = int(packed[1:end])
    pos, out = end + 2, []
    for _ in range(min(count, most)):
        end = packed.index(b"\r\n", pos)
        start = end + 2
        stop = start + int(packed[pos + 1 : end])
        out.append(packed[start:stop])
        pos = stop + 2
    return out


def _redirect(reply: object) -> bytes | None:
    """The redirection a reply is (b"MOVED", b"ASK", b"TRYAGAIN", b"CLUSTERDOWN"), or None.
    redis-py reads those error replies as their own exception types."""
    if isinstance(reply, MovedError):
        return b"MOVED"
    if isinstance(reply, AskError):
        return b"ASK"
    if isinstance(reply, TryAgainError):
        return b"TRYAGAIN"
    if isinstance(reply, ClusterDownError):
        return b"CLUSTERDOWN"
    return None


def _target(reply: AskError) -> tuple[int, Address]:
    """The slot and node of a MOVED or ASK reply ("MOVED 3999 127.0.0.1:6381")."""
    return reply.slot_id, (reply.host.strip("[]"), reply.port)


class ClusterLane:
    """``CommandLane.call`` over a cluster: each command to the master of its slot."""

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self.user: str | None = _node_kwargs(topology.url).get("username")
        self.redirects: Counter[str] = Counter()  # MOVED, ASK, TRYAGAIN, CLUSTERDOWN replies

    async def call(
        self, packed: bytes | list[bytes], replies: int = 1, *, idempotent: bool = True
    ) -> list[Any]:
        """As ``CommandLane.call``; ``packed`` holds one command per reply (they may go to
        different nodes: each node's are written together, in order, the nodes at once)."""
        topology = self._topology
        commands = [packed] if isinstance(packed, bytes) else list(packed)
        if len(commands) != replies:
            raise ValueError(f"a cluster lane call takes one command per reply, got {replies}")
        out: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        asked: dict[int, Address] = {}  # ASK: to this node once, behind ASKING
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REDIRECT_TIMEOUT
        delay = 0.01
        while True:
            groups: dict[Address, list[int]] = {}
            last: Address | None = None
            for i in todo:
                addr = asked.get(i)
                if addr is None:
                    key = command_key(commands[i])
                    if key == _BROADCAST:
                        for master in self._topology.masters():
                            groups.setdefault(master, []).append(i)
                        continue
                    if key is None and last is not None:
                        addr = last  # keyless (WAIT): behind the command before it
                    else:
                        if topology.stale_now:
                            await topology.load()
                        addr = topology.owner_now(None if key is None else key_slot(key))
                groups.setdefault(addr, []).append(i)
                last = addr
            sent = list(groups.items())
            if len(sent) == 1:
                got: list[Any] = await self._send(*sent[0], commands, asked, idempotent)
                if len(got) == len(commands) and not any(isinstance(r, ResponseError) for r in got):
                    return got  # the common case: one node, no redirection
                results: list[Any] = [got]
            else:
                results = await asyncio.gather(
                    *(self._send(a, idx, commands, asked, idempotent) for a, idx in sent),
                    return_exceptions=True,
                )
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
            again: dict[int, None] = {}  # the commands to resend, in order
            seen: set[int] = set()
            wait = False
            for (_, idx), got in zip(sent, results, strict=True):
                for i, reply in zip(idx, got, strict=True):
                    if i in seen and isinstance(out[i], Exception):
                        continue  # a broadcast (SCRIPT LOAD): an error wins over successes
                    seen.add(i)
                    out[i] = reply
                    asked.pop(i, None)
                    kind = _redirect(reply)
                    if kind is None:
                        continue
                    self.redirects[kind.decode()] += 1
                    if kind == b"MOVED":
                        self._topology.moved(*_target(reply))
                    elif kind == b"ASK":
                        asked[i] = _target(reply)[1]
                    else:  # TRYAGAIN (a migration under way), CLUSTERDOWN (a failover)
                        wait = True
                        if kind == b"CLUSTERDOWN":
                            self._topology.stale()
                    again[i] = None
            todo = sorted(again)
            if not todo or loop.time() > deadline:
                return out
            if wait:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)

    async def _send(
        self,
        addr: Address,
        idx: list[int],
        commands: Sequence[bytes],
        asked: dict[int, Address],
        idempotent: bool,
    ) -> list[Any]:
        packed: list[bytes] = []
        for i in idx:
            if asked and i in asked:
                packed.append(_ASKING)
            packed.append(commands[i])
        try:
            replies = await self._topology.node(addr).lane.call(
                packed, len(packed), idempotent=idempotent
            )
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self._topology.stale()  # a failover, or a node gone: where do its slots live now
            raise
        if not asked:
            return replies
        out, pos = [], 0
        for i in idx:
            pos += i in asked  # ASKING's reply (OK) is dropped
            out.append(replies[pos])
            pos += 1
        return out

    async def aclose(self) -> None:
        await self._topology.aclose()


class _NodeListener(ResultListener):
    """The result subscription on one master; on another when that one is gone (a cluster
    delivers every PUBLISH to every node, so any of them hears the same)."""

    def __init__(self, topology: Topology, addr: Address) -> None:
        super().__init__(topology.node(addr).redis)
        self._topology = topology
        self._addr = addr

    async def _connect(self) -> AbstractConnection:
        try:
            return await super()._connect()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self._topology.stale()
            others = [a for a in self._topology.masters() if a != self._addr]
            if not others:
                raise
            log.debug(
                "result subscription: %s:%d is gone, moving to %s:%d", *self._addr, *others[0]
            )
            self._addr = others[0]
            self._redis = self._topology.node(self._addr).redis
            raise


class ClusterResults:
    """``ResultListener.watch`` over a cluster: the subscription on the node of the job."""

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self._listeners: dict[Address, _NodeListener] = {}

    @contextlib.asynccontextmanager
    async def watch(self, channel: str, read: bytes | None = None) -> AsyncIterator[Watch]:
        addr = await self._topology.owner(key_slot(channel.encode()))
        listener = self._listeners.get(addr)
        if listener is None:
            listener = self._listeners[addr] = _NodeListener(self._topology, addr)
        async with listener.watch(channel, read) as w:
            if _redirect(w.state) is not None:
                w.state = None  # the slot moved or migrates: the caller reads through the lane
            yield w

    async def aclose(self) -> None:
        listeners, self._listeners = list(self._listeners.values()), {}
        for listener in listeners:
            await listener.aclose()
