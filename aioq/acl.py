"""Redis ACL users for one app: a producer and a worker, each with only the commands and the
key and channel patterns aioq needs (docs/deploying.md quotes ``setuser``'s lines for app "shop").

Every key of an app is ``aioq:{<app>:<queue>}:...`` or ``aioq:{<app>}:...`` (``keys.py``), and
so is every pub/sub channel (a job's ``done:`` and ``progress:``, a queue's ``cancel``), so
``~aioq:{shop:*}:*`` and ``&aioq:{shop:*}:*`` cover one app and nothing of another (an app name
holds no ``:`` or braces, so ``shop`` never matches ``shop2``'s keys). Redis checks the
commands a Lua script runs against the calling user too, so a user that may EVALSHA the
scripts still needs each command they call (``scripts/*.lua``).

The producer may enqueue (``enqueue`` and ``enqueue_sync``), read a job's status, info and
result (pushed over SUBSCRIBE), follow its progress and cancel it. The worker may run jobs:
read and claim stream entries, write outcomes, retry, promote scheduled jobs, fire crons,
apply rate limits, renew leases, publish progress, write its heartbeat, and enqueue (cron
ticks; follow-up jobs). Neither may run anything else: no KEYS/SCAN, FLUSHALL, CONFIG, ACL,
DEBUG, or scripts of its own beyond what EVAL of aioq's needs (Redis cannot tell aioq's Lua
from other Lua, so a user allowed EVALSHA may run any script *over its own keys*).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

from redis.exceptions import NoPermissionError, ResponseError

from .errors import PermissionDenied

# what a connection sends as it opens (redis-py: HELLO for RESP3, CLIENT SETNAME for a
# client_name= URL, SELECT for a database other than 0). Not CLIENT SETINFO: Redis < 7.2 has no
# such command, so ACL SETUSER would refuse the line; redis-py ignores its NOPERM reply.
_CONNECTION = ("ping", "hello", "select", "client|setname")

# calling the scripts: EVALSHA, and SCRIPT LOAD / EVAL after a restarted Redis forgot them
_SCRIPTS = ("evalsha", "eval", "script|load")

PRODUCER_COMMANDS: tuple[str, ...] = (
    *_CONNECTION,
    *_SCRIPTS,
    # in the ENQUEUE, CANCEL, FLOW and SWEEP scripts (enqueue_job.lua, cancel.lua, finish.lua;
    # a cancel reaching a workflow's other steps runs flow.lua and sweep.lua)
    "time", "exists", "hset", "xadd", "zadd", "zrem", "expire", "zremrangebyscore", "publish",
    "hexists", "hdel", "hincrby", "hsetnx", "persist", "zrangebyscore",
    # a keyed job's place on its key, or its wait in its key's list (keyed.lua)
    "llen", "rpush", "lpos", "lrem", "lmove",
    # job.status(), info(), result(), progress(), a group's results, finding a job's queue
    "hget", "hmget", "hgetall", "zscore", "subscribe", "unsubscribe",
    # flow control: unique and debounce keys (dedup.lua, and tell.lua's unlock), a limited
    # queue's size (limit.lua) and waiting for room (XREAD of its recent stream), taking back
    # a refused broadcast's record
    "get", "set", "pexpire", "pexpireat", "del", "zcard", "xlen", "xrevrange", "xread",
)  # fmt: skip
"""Commands an app's producer runs: enqueue (workflows too), status, info, result, progress,
cancel."""

WORKER_COMMANDS: tuple[str, ...] = (
    *PRODUCER_COMMANDS,
    # the streams: groups, reads, claims, leases, acknowledgement (fetch, start, reclaim,
    # renew, release, complete) and the dead-letter and recent streams
    "xgroup|create", "xreadgroup", "xautoclaim", "xclaim", "xpending", "xrange", "xack",
    "xdel", "xgroup|delconsumer",
    # job records, scheduled set, rate-limit logs, cron state, pause flag, heartbeats and
    # their throughput buckets
    "zrange", "hkeys", "hlen",
    # the sweep of the keys with jobs waiting (keyed.lua)
    "lrange",
    # broadcast copies handed to a worker (broadcast.lua, take.lua)
    "sadd", "smembers",
    # at start, the maxmemory-policy (a Redis that evicts loses jobs: the worker warns)
    "info|memory",
)  # fmt: skip
"""Commands an app's worker runs (a worker also enqueues: cron ticks, workflow steps)."""

ROLES = {"producer": PRODUCER_COMMANDS, "worker": WORKER_COMMANDS}


def patterns(app: str, role: str) -> list[str]:
    """The key and channel patterns of ``role`` for ``app``: its queues' keys and channels,
    and the per-app keys: (worker) ``aioq:{<app>}:*``, the heartbeats and throughput it
    writes; (producer) the heartbeat hash ``aioq:{<app>}:workers`` alone, which a broadcast
    reads to learn the live workers."""
    if role == "worker":
        return [f"~aioq:{{{app}:*}}:*", f"~aioq:{{{app}}}:*", f"&aioq:{{{app}:*}}:*"]
    return [f"~aioq:{{{app}:*}}:*", f"~aioq:{{{app}}}:workers", f"&aioq:{{{app}:*}}:*"]


def setuser(app: str, role: str, user: str, password: str) -> str:
    """The ``ACL SETUSER`` line of a ``role`` ("producer" or "worker") user for ``app``.

    ``reset`` first: the user has no other right, whatever it had; ``>password`` adds the
    password (``<password>`` in the docs: put yours there)."""
    if role not in ROLES:
        raise ValueError(f"role must be 'producer' or 'worker', got {role!r}")
    rights = [f"+{c}" for c in ROLES[role]]
    return " ".join(
        ["ACL SETUSER", user, "reset", "on", f">{password}", *patterns(app, role), *rights]
    )


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing a command for the user: NOPERM, or a script's command
    refused inside the script (an error reply that is not tagged NOPERM)."""
    return isinstance(exc, NoPermissionError) or (
        isinstance(exc, ResponseError) and "user executing the script can't" in str(exc)
    )


def url_user(url: str) -> str:
    """The ACL user a Redis URL logs in as ("default" when it names none)."""
    name = urlsplit(url).username
    return unquote(name) if name else "default"


def denied(user: str | None, action: str, exc: BaseException) -> PermissionDenied:
    """The ``PermissionDenied`` of a NOPERM reply to ``action`` (what aioq tried, naming the
    command and the keys or channel), naming the user and what an aioq user needs."""
    user = user or "default"
    app = _app_of(action)
    need = f"{' '.join(patterns(app, 'worker'))} and aioq's commands" if app else "aioq's keys"
    return PermissionDenied(
        f"Redis user {user!r} may not {action} ({exc}): an aioq user of the app needs {need}, "
        "as aioq.acl.setuser() writes them (docs/deploying.md: Locked down)",
        user,
    )


@contextlib.contextmanager
def explained(url: str, action: str) -> Iterator[None]:
    """Turn a NOPERM reply inside the block into ``denied`` for the URL's user."""
    try:
        yield
    except ResponseError as exc:  # NoPermissionError is one
        if not refused(exc):
            raise
        raise denied(url_user(url), action, exc) from exc


def _app_of(action: str) -> str | None:
    """The app named by the first aioq key in ``action`` ("aioq:{shop:default}:..." or
    "aioq:{shop}:...")."""
    start = action.find("aioq:{")
    if start < 0:
        return None
    inner = action[start + 6 : action.find("}", start)]
    return inner.partition(":")[0] or None
