"""Producers without an event loop: ``task.enqueue_sync(...)`` and ``SyncJob[R]``.

For the sync half of an application (Django and Flask views, management commands, scripts):
the same job, encoded by the same ``Call.prepare`` (so signed and traced the same way), is
written by the same ENQUEUE script in one round trip, over redis-py's blocking client. One
``SyncClient`` per app serves every thread (its pool hands each command a connection of its
own), so request handlers running in threads share it safely.

``SyncJob.result()`` waits like ``Job.result()``: it subscribes to the job's ``done``
channel, reads the stored state once the subscription is confirmed (a job that finished
before is seen there, one that finishes after is pushed), and blocks on the subscription
with the remaining timeout; it never polls. Each waiting call holds one connection of the
pool while it waits.

Calling any of these from a thread that runs an event loop raises ``RuntimeError``: it would
block that loop (every other request and job of it) for the round trip or the whole wait.
Use ``await task.enqueue(...)`` there.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .acl import explained
from .connection import CONNECT_TIMEOUT, sync_client
from .errors import JobNotFound, QueueFull
from .hosts import is_hosts_url
from .job import STATE_FIELDS, JobInfo, JobStatus, outcome, pushed_outcome, record_info
from .queue_limits import ROOM_RECHECK
from .scripts import CANCEL, ENQUEUE
from .tracing import publish

if TYPE_CHECKING:
    from .app import App
    from .keys import QueueKeys
    from .task import Call

R = TypeVar("R")
T = TypeVar("T")


class SyncClient:
    """The blocking Redis client of one app and the scripts it calls (the same Lua sources
    as the async client's, so the same SHA1s): shared by every thread."""

    def __init__(self, url: str, max_connections: int) -> None:
        self.redis: redis.Redis
        if is_hosts_url(url):  # a cluster or sentinels: their own clients (connection.py)
            self.redis = sync_client(
                url, max_connections=max_connections, socket_connect_timeout=CONNECT_TIMEOUT
            )
        else:
            pool = redis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=20,  # a thread waits this long for a free connection, then errors
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=6),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
                socket_connect_timeout=CONNECT_TIMEOUT,  # the URL's own query parameter wins
            )
            self.redis = redis.Redis(connection_pool=pool)
        # register_script: EVALSHA, and after NOSCRIPT (a restarted Redis) SCRIPT LOAD + again
        self.enqueue = self.redis.register_script(ENQUEUE)
        self.cancel = self.redis.register_script(CANCEL)

    def close(self) -> None:
        self.redis.close()
        pool = getattr(self.redis, "connection_pool", None)  # a cluster client has none
        if pool is not None:
            pool.disconnect()


class ClientHolder:
    """Makes an app's ``SyncClient`` once, whichever thread asks first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: SyncClient | None = None

    def get(self, url: str, max_connections: int) -> SyncClient:
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    client = self._client = SyncClient(url, max_connections)
        return client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def no_event_loop(what: str) -> None:
    """Raise ``RuntimeError`` when called from a thread running an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{what} blocks, and this thread runs an event loop (it would stall every task of "
        "it): use the async API here (await task.enqueue(...), await job.result(...)), or "
        "call it from a thread (asyncio.to_thread)"
    )


def call(app: App, fn: Callable[[], T], action: str) -> T:
    """Run ``fn`` (blocking Redis calls); connection failures raise as ``App._call`` does, a
    NOPERM reply as ``PermissionDenied`` naming ``action``."""
    from .app import UNREACHABLE

    try:
        with explained(app.redis_url, action):
            return fn()
    except UNREACHABLE as exc:
        raise app._unavailable(exc) from exc


def enqueue_call(app: App, c: Call[R]) -> SyncJob[R]:
    """Enqueue one call with the blocking client: one round trip (``App._enqueue_call``'s),
    with ``queue_limits`` and ``wait_if_full`` as there (``queue_limits.py``)."""
    no_event_loop("enqueue_sync()")
    if c.task.broadcast:
        raise TypeError(
            f"task {c.task.name!r} is a broadcast task: enqueue it with await "
            f"{c.task.name}.enqueue(...), which returns a BroadcastJob"
        )
    queue, job = c.prepare()
    keys = app.keys(queue)
    app._queues.add(queue)  # one of `queues` from now on
    client = app._sync()
    spans = publish(((queue, job),))  # None when no span was made (tracing is off)
    limit = app.queue_limits.get(queue, 0)
    deadline = time.monotonic() + (c.options.wait_if_full or 0.0)

    def send() -> Any:
        while True:
            reply = client.enqueue(keys=[*keys.declared, keys.job(job[0])], args=[limit, *job])
            if not (reply and isinstance(reply[0], list)):
                return reply[0]
            size, after = reply[0]  # refused: the queue is full
            left = deadline - time.monotonic()
            if left <= 0:
                raise QueueFull(queue, limit, int(size))
            # woken by a job of the queue finishing, as the async producer is
            block = max(1, round(min(left, ROOM_RECHECK) * 1000))
            client.redis.xread({keys.recent: after}, count=1, block=block)

    action = f"run aioq's ENQUEUE script (EVALSHA) on the keys {keys.tag}*"
    if spans is None:
        outcome = call(app, send, action)
    else:
        with spans:
            outcome = call(app, send, action)
    return SyncJob(app, outcome.decode() if isinstance(outcome, bytes) else job[0], queue)


class SyncJob(Generic[R]):
    """A handle to a job for code without an event loop; every method blocks.

    What ``task.enqueue_sync(...)`` returns; ``app.job_sync(id)`` makes one for an existing
    id (no I/O). The methods are those of ``Job`` without ``await``: ``status()``,
    ``done()``, ``info()``, ``cancel()``, ``result(timeout=)``.
    """

    __slots__ = ("_app", "_keys", "id")

    def __init__(self, app: App, job_id: str, queue: str | None = None) -> None:
        self._app = app
        self.id = job_id
        self._keys: QueueKeys | None = app.keys(queue) if queue is not None else None

    @property
    def queue(self) -> str | None:
        """The job's queue, once known."""
        return self._keys.queue if self._keys is not None else None

    def __repr__(self) -> str:
        return f"<SyncJob {self.id!r} queue={self.queue!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SyncJob) and other.id == self.id and other.queue == self.queue

    def __hash__(self) -> int:
        return hash((self.id, self.queue))

    def _resolve(self, what: str) -> tuple[QueueKeys, redis.Redis]:
        no_event_loop(f"SyncJob.{what}()")
        r = self._app._sync().redis
        if self._keys is None:
            queues = self._app.queues
            with r.pipeline(transaction=False) as pipe:
                for q in queues:
                    pipe.exists(self._app.keys(q).job(self.id))
                found = call(self._app, pipe.execute, f"find job {self.id!r} (EXISTS)")
            for q, hit in zip(queues, found, strict=True):
                if hit:
                    self._keys = self._app.keys(q)
                    break
            else:
                raise JobNotFound(self.id, queues)
        return self._keys, r

    def status(self) -> JobStatus:
        """The job's current status; raises ``JobNotFound`` when there is no such job."""
        keys, r = self._resolve("status")
        key = keys.job(self.id)
        raw: Any = call(self._app, lambda: r.hget(key, "status"), f"read job (HGET {key})")
        if raw is None:
            raise JobNotFound(self.id, [keys.queue])
        return JobStatus(raw.decode())

    def done(self) -> bool:
        """``True`` once the job is in a final state; never waits (``result()`` does)."""
        return self.status().finished

    def info(self) -> JobInfo:
        """Everything recorded about the job (one round trip)."""
        keys, r = self._resolve("info")
        with r.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.job(self.id))
            pipe.zscore(keys.scheduled, self.id)
            raw, due = call(self._app, pipe.execute, f"read job (HGETALL {keys.job(self.id)})")
        if not raw:
            raise JobNotFound(self.id, [keys.queue])
        return record_info(self.id, keys.queue, {k.decode(): v for k, v in raw.items()}, due)

    def cancel(self) -> bool:
        """Cancel the job, as ``Job.cancel()``; ``False`` when it had already finished."""
        keys, _ = self._resolve("cancel")
        script = self._app._sync().cancel
        done = call(
            self._app,
            lambda: script(
                keys=[*keys.declared, keys.job(self.id)], args=[self.id, self._app.result_ttl]
            ),
            f"run aioq's CANCEL script (EVALSHA) on the keys {keys.tag}*",
        )
        if int(done) < 0:
            raise JobNotFound(self.id, [keys.queue])
        return int(done) > 0

    def result(self, timeout: float | None = None) -> R:
        """Block until the job finishes and return its value; raises ``TaskFailed``,
        ``JobCancelled`` or the builtin ``TimeoutError`` as ``Job.result()`` does. Pushed over
        a subscription to the job's ``done`` channel, never polled."""
        keys, r = self._resolve("result")
        action = f"wait for job {self.id!r} (SUBSCRIBE {keys.done(self.id)}, HMGET its record)"
        with explained(self._app.redis_url, action):
            return self._wait(keys, r, timeout)

    def _wait(self, keys: QueueKeys, r: redis.Redis, timeout: float | None) -> R:
        deadline = None if timeout is None else time.monotonic() + timeout
        key, channel = keys.job(self.id), keys.done(self.id)
        delay = 0.05
        while True:
            pubsub = r.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(channel)
                # confirmed before the state is read: a finish after the read is pushed
                while (m := pubsub.get_message(timeout=_left(deadline))) is not None:
                    if m["type"] == "subscribe":
                        break
                delay = 0.05
                while True:
                    state: list[bytes | None] = r.hmget(key, STATE_FIELDS)  # type: ignore[assignment]
                    if state[0] is None:
                        raise JobNotFound(self.id, [keys.queue])
                    status = JobStatus(state[0].decode())
                    if status.finished:
                        return outcome(self.id, status, state)  # type: ignore[no-any-return]
                    left = _left(deadline)
                    if left is not None and left <= 0:
                        raise TimeoutError(
                            f"job {self.id!r} did not finish within {timeout}s "
                            f"(status {status.value})"
                        )
                    m = pubsub.get_message(timeout=left)  # blocks until pushed or timed out
                    while m is not None and m["type"] != "message":
                        m = pubsub.get_message(timeout=_left(deadline))
                    if m is not None:
                        pushed = pushed_outcome(self.id, m["data"])
                        if pushed is not None:  # the message carried the whole outcome
                            return pushed[0]  # type: ignore[no-any-return]
                    # timed out, or a message without the outcome: read the record again
            except TimeoutError:  # ours (the builtin is an OSError): not a connection failure
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                # subscribe again and re-read: what was published meanwhile is in the record
                left = _left(deadline)
                if left is not None and left <= 0:
                    raise self._app._unavailable(exc) from exc
                time.sleep(min(delay, left) if left is not None else delay)
                delay = min(delay * 2, 1.0)
            finally:
                pubsub.close()


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
