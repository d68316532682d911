"""``App``: configuration, the task registry, and the producer side of enqueueing."""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import timedelta, tzinfo
from typing import Any, Literal, ParamSpec, TypeVar, Unpack, overload

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .acl import explained
from .broadcast import BroadcastJob, BroadcastTask, fan_out
from .cluster import ClusterLane, ClusterResults, Topology, cluster_client
from .connection import (
    CommandLane,
    Lane,
    MissingDatabase,
    NotRedis,
    check_url,
    make_client,
    redacted,
    tls_hint,
)
from .cron import CatchUp, CronSchedule, parse_every, parse_timezone
from .env import AppOptions, options_from_env
from .errors import JobNotFound, QueueFull, RedisUnavailable
from .group_job import GroupJob
from .hosts import is_cluster_url, parse_hosts_url
from .job import Job
from .keys import QueueKeys, validate_name
from .queue_limits import check_limits, wait_for_room
from .ratelimit import RateLimit, parse_rate
from .results import ResultListener
from .routes import Routes
from .scripts import Scripts
from .signing import Signer, signing_keys
from .sync import ClientHolder, SyncClient, SyncJob, enqueue_call
from .task import AutoRetry, Backoff, Call, ConcurrencyKey, Options, Task
from .tracing import publish

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_REDIS_URL = "redis://localhost:6379/0"

UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, NotRedis, MissingDatabase)
"""The errors that mean Redis could not be talked to (``App._unavailable`` names the URL)."""


class _Connection:
    """The Redis client, scripts and result subscription of one event loop."""

    def __init__(self, url: str, max_connections: int) -> None:
        self.redis: Redis
        self.lane: Lane
        self.results: ResultListener | ClusterResults
        if is_cluster_url(url):  # a lane and a subscription per master (cluster.py)
            topology = Topology(parse_hosts_url(url), max_connections)
            self.redis = cluster_client(topology.url, max_connections)
            self.lane, self.results = ClusterLane(topology), ClusterResults(topology)
        else:
            self.redis = make_client(url, max_connections)
            self.lane = CommandLane(self.redis, size=min(max_connections, 64))
            self.results = ResultListener(self.redis)
        self.scripts = Scripts(self.lane)

    async def aclose(self) -> None:
        await self.results.aclose()
        await self.lane.aclose()
        await self.redis.aclose()


class App:
    """An aioq application: its name namespaces every Redis key it uses.

    ``redis_url`` defaults to ``$AIOQ_REDIS_URL``, then ``redis://localhost:6379/0``.
    ``visibility_timeout`` is how long a job's lease lasts without renewal before another
    worker takes it over; ``result_ttl`` how long finished job records are kept (seconds);
    ``max_deliveries`` how often one attempt may be delivered without finishing before the
    job is poison and goes to the dead-letter stream. ``workflow_ttl`` is how long a workflow
    step may wait for its predecessors (seconds, from the workflow's enqueue): a held step or
    group record not reached by then expires, so nothing a dead producer half-wrote stays.

    ``signing_key`` (bytes, or a list of bytes keys: the first signs, every one verifies)
    puts an HMAC-SHA256 on every job this app enqueues, and makes its workers run signed jobs
    only: an unsigned or tampered job fails with "bad signature" and goes to the dead-letter
    stream (``signing.py``).

    ``queue_limits={"emails": 10_000}`` bounds queues: an enqueue that would take one past
    its limit (jobs not finished: queued, running, scheduled) raises ``QueueFull`` and writes
    nothing to it (``queue_limits.py``). ``routes={"emails.*": "emails"}`` sends a task
    registered without a queue to the queue of the first pattern its name matches
    (shell-style patterns, ``routes.py``); a worker started for the app serves those queues.
    """

    def __init__(
        self,
        name: str,
        redis_url: str | None = None,
        visibility_timeout: float = 30.0,
        *,
        result_ttl: int = 86_400,
        max_deliveries: int = 5,
        default_queue: str = "default",
        dead_letter_max: int = 100_000,
        max_connections: int = 200,
        workflow_ttl: int = 7 * 86_400,
        signing_key: bytes | Sequence[bytes] | None = None,
        queue_limits: Mapping[str, int] | None = None,
        routes: Mapping[str, str] | None = None,
    ) -> None:
        self._name = validate_name("app", name)
        self._signer = None if signing_key is None else Signer(signing_keys(signing_key))
        env_url = os.environ.get("AIOQ_REDIS_URL")
        source = "redis_url" if redis_url else "AIOQ_REDIS_URL" if env_url else "redis_url"
        self._redis_url = check_url(redis_url or env_url or DEFAULT_REDIS_URL, source)
        if visibility_timeout <= 0:
            raise ValueError(f"visibility_timeout must be > 0 seconds, got {visibility_timeout!r}")
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be >= 1, got {max_deliveries!r}")
        self._visibility_timeout = float(visibility_timeout)
        self.result_ttl = int(result_ttl)
        self.max_deliveries = int(max_deliveries)
        self.default_queue = validate_name("queue", default_queue)
        self.dead_letter_max = int(dead_letter_max)
        self.max_connections = max_connections
        if workflow_ttl < 1:
            raise ValueError(f"workflow_ttl must be >= 1 second, got {workflow_ttl!r}")
        self.workflow_ttl = int(workflow_ttl)
        #: queue -> the most jobs not finished it may hold (``queue_limits.py``)
        self.queue_limits: dict[str, int] = check_limits(queue_limits)
        self.routes = Routes(routes)
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.crons: list[CronSchedule] = []
        self._keys: dict[str, QueueKeys] = {}
        self._queues: set[str] = {self.default_queue, *self.routes.queues}
        self._connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connection] = (
            weakref.WeakKeyDictionary()
        )
        self._sync_client = ClientHolder()  # the blocking client of enqueue_sync (sync.py)

    @classmethod
    def from_env(cls, **options: Unpack[AppOptions]) -> App:
        """An app configured by ``AIOQ_*`` environment variables, one per option
        (``AIOQ_NAME``, ``AIOQ_REDIS_URL``, ``AIOQ_VISIBILITY_TIMEOUT``, ...; see ``env.py``).

        A keyword argument given here wins over its variable; an unset or empty variable
        leaves the option's default. A value that does not parse or is out of range raises
        ``ValueError`` naming the variable and the value; no name at all (neither ``name=``
        nor ``AIOQ_NAME``) raises ``ValueError`` too.
        """
        return cls(**options_from_env(dict(options)))

    @property
    def name(self) -> str:
        """The app's name, which namespaces every Redis key it uses (read-only: see
        ``rebind``)."""
        return self._name

    @property
    def redis_url(self) -> str:
        """The Redis this app uses (read-only: see ``rebind``)."""
        return self._redis_url

    @property
    def visibility_timeout(self) -> float:
        """Seconds a job's lease lasts without renewal before another worker takes it over."""
        return self._visibility_timeout

    def rebind(self, *, redis_url: str | None = None, name: str | None = None) -> None:
        """Point this app, and so every task registered on it, at another Redis and/or name.

        For set-up code that gets its Redis late (``aioq worker --embedded-redis``, a test's
        private server; ``aioq.testing`` isolates each test this way): the tasks keep their
        app, so code that enqueues through them follows. Only while no connection is open:
        ``RuntimeError`` otherwise (``await app.aclose()`` first), since open connections
        would go on using the old Redis. The queues learnt from enqueues are forgotten (they
        named the old keys); those of the tasks stay.
        """
        new_name = self._name if name is None else validate_name("app", name)
        new_url = self._redis_url if redis_url is None else check_url(redis_url, "redis_url")
        for loop in list(self._connections):
            if not loop.is_closed():
                raise RuntimeError(
                    f"app {self._name!r} has Redis connections open on an event loop: "
                    "await app.aclose() in that loop before rebind()"
                )
            del self._connections[loop]  # its loop is gone: nothing can use them
        self._name, self._redis_url = new_name, new_url
        self._keys.clear()  # they spell the old name
        self._queues = {
            self.default_queue,
            *self.routes.queues,
            *(t.queue for t in self.tasks.values()),
        }

    def __repr__(self) -> str:
        return f"<App {self.name!r} redis={redacted(self.redis_url)!r}>"

    # -- registry -------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int = 0,
        backoff: Backoff = 1.0,
        timeout: float | None = None,
        rate_limit: str | None = None,
        priority: int = 0,
        autoretry_for: AutoRetry | None = None,
        concurrency_key: ConcurrencyKey | None = None,
        key_concurrency: int | None = None,
        key_rate_limit: str | None = None,
        broadcast: Literal[False] = False,
    ) -> _TaskDecorator: ...
    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int = 0,
        backoff: Backoff = 1.0,
        timeout: float | None = None,
        rate_limit: str | None = None,
        priority: int = 0,
        autoretry_for: AutoRetry | None = None,
        broadcast: Literal[True],
    ) -> _BroadcastDecorator: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int = 0,
        backoff: Backoff = 1.0,
        timeout: float | None = None,
        rate_limit: str | None = None,
        priority: int = 0,
        autoretry_for: AutoRetry | None = None,
        concurrency_key: ConcurrencyKey | None = None,
        key_concurrency: int | None = None,
        key_rate_limit: str | None = None,
        broadcast: bool = False,
    ) -> Task[Any, Any] | _TaskDecorator | _BroadcastDecorator:
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., ...)``.

        ``rate_limit="10/m"`` (N/s, N/m, N/h; the unit also sec, second, min, minute, hr or
        hour) caps the task's starts across every worker sharing the Redis; a limited job
        waits in the scheduled set, holding no concurrency slot and spending no retry.
        ``priority`` 0 (default, lowest) to 9: higher starts first within the queue, and lower
        ones still get a share (docs/scheduling.md). ``autoretry_for=(ConnectionError, ...)``
        retries only failures with those exception types (subclasses included) and fails the
        job at once on any other; without it every exception is retried while ``retries`` last.
        Without ``queue`` the task goes to the queue of the first of ``routes`` its name
        matches, else to the default queue. ``broadcast=True`` returns a ``BroadcastTask``:
        each enqueue runs once on every live worker serving its queue (``broadcast.py``).

        Flow control by key: ``concurrency_key`` (a function of the job's arguments returning a
        string, run at enqueue, or one string for every job; ``task.options(concurrency_key=
        ...)`` gives one job's) puts each job under a key; at most ``key_concurrency`` jobs of
        one key run at once and at most ``key_rate_limit`` start per period, across every
        worker, keys served in turn (a key with neither limit runs one job at a time). A job
        waiting for its key holds no slot and spends no retry (docs/flow-control.md).
        """
        decorator = _TaskDecorator(
            self, name, queue, retries, backoff, timeout, rate_limit, priority, autoretry_for,
            (concurrency_key, key_concurrency, key_rate_limit),
        )  # fmt: skip
        if broadcast:
            return _BroadcastDecorator(decorator)
        return decorator if fn is None else decorator(fn)

    def cron(
        self,
        expression: str | None = None,
        /,
        *,
        every: float | timedelta | None = None,
        timezone: str | tzinfo | None = None,
        catch_up: CatchUp = "latest",
        grace: float = 60.0,
        queue: str | None = None,
        retries: int = 0,
        timeout: float | None = None,
        priority: int = 0,
    ) -> _CronDecorator:
        """Run a task on a schedule: ``@app.cron("*/5 * * * *")`` or ``@app.cron(every=30)``.

        A 5-field cron expression (in ``timezone``, UTC by default) or an interval in seconds
        (or a timedelta). Decorates an ``async def`` (or ``def``) taking no arguments, which is
        registered as a task, or an existing task; stack several to add schedules. Every
        worker serving the task's queue fires the ticks and each tick runs exactly once,
        however many workers run. Ticks missed while no worker ran: ``catch_up="latest"``
        runs the most recent one once; ``"skip"`` runs it only if at most ``grace`` seconds
        late. An invalid expression raises ``ValueError`` naming it and the function when the
        decorator is applied, before anything is registered.
        """
        if expression is not None and every is not None:
            raise ValueError("give a cron expression or every=, not both")
        tz = parse_timezone(timezone)
        seconds = None if every is None else parse_every(every)
        if expression is None and seconds is None:
            raise ValueError("@app.cron needs a cron expression or every=")
        return _CronDecorator(
            self, expression, seconds, tz, catch_up, grace, queue, retries, timeout, priority
        )

    def _add_cron(self, schedule: CronSchedule) -> None:
        if any(s.name == schedule.name for s in self.crons):
            raise ValueError(f"cron schedule {schedule.name!r} is already registered")
        self.crons.append(schedule)

    async def set_rate_limit(self, task: str, rate: str | None, queue: str | None = None) -> None:
        """Change a task's global rate limit at run time, for every worker, without restarts.

        ``rate`` is "N/s", "N/m" or "N/h" (or another unit ``@app.task`` takes); ``None``
        removes the override, so the limit the task's code declares applies again.
        """
        keys = self.keys(queue or (self.tasks[task].queue if task in self.tasks else None))
        if rate is None:
            await self._call(self.redis.hdel(keys.ratelimits, task + "!"))
        else:
            await self._call(self.redis.hset(keys.ratelimits, task + "!", parse_rate(rate).wire))

    async def rate_limits(self, queue: str | None = None) -> dict[str, str]:
        """The rate limits in force on a queue, by task (overrides win), as "N/s" strings."""
        raw: dict[bytes, bytes] = await self._call(
            self.redis.hgetall(self.keys(queue).ratelimits)  # type: ignore[arg-type]
        )
        out: dict[str, str] = {}
        for field, value in sorted(raw.items()):
            name = field.decode()
            limit, period = value.decode().split()
            text = str(RateLimit(int(limit), int(period)))
            if name.endswith("!"):
                out[name[:-1]] = text
            else:
                out.setdefault(name, text)
        return out

    def route(self, task: str) -> str:
        """The queue a task named ``task`` goes to when nothing names one: the first of
        ``routes`` it matches, else the default queue."""
        return self.routes.queue_for(task) or self.default_queue

    def _register(self, task: Task[Any, Any]) -> None:
        if task.name in self.tasks:
            raise ValueError(
                f"a task named {task.name!r} is already registered on app {self.name!r}"
            )
        self.tasks[task.name] = task
        self._queues.add(task.queue)

    @property
    def queues(self) -> list[str]:
        """Every queue this app knows of: the default one, those of its tasks, and those it
        has enqueued to (so ``app.job(id)`` finds those jobs without being told the queue)."""
        return sorted(self._queues)

    def keys(self, queue: str | None = None) -> QueueKeys:
        """The key layout of one queue (default: the app's default queue); a ``ValueError``
        for a name that cannot be one.

        A lookup, nothing more: it does not make the queue one of ``queues`` (registering a
        task or enqueueing does, explicitly). The object is memoised so that one name always
        gives the same one: the worker keys its per-queue buffers by identity.
        """
        queue = queue or self.default_queue
        keys = self._keys.get(queue)
        if keys is None:  # setdefault: producer threads (enqueue_sync) agree on one object
            keys = self._keys.setdefault(queue, QueueKeys(self.name, validate_name("queue", queue)))
        return keys

    # -- connections ----------------------------------------------------------------------

    def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = self._connections.get(loop)
        if conn is None:
            conn = self._connections[loop] = _Connection(self.redis_url, self.max_connections)
        return conn

    @property
    def redis(self) -> Redis:
        """The app's Redis client for the running event loop (bytes in, bytes out)."""
        return self._connection().redis

    @property
    def scripts(self) -> Scripts:
        return self._connection().scripts

    def _results(self) -> ResultListener | ClusterResults:
        return self._connection().results

    async def aclose(self) -> None:
        """Close this event loop's connections (they reopen on next use)."""
        conn = self._connections.pop(asyncio.get_running_loop(), None)
        if conn is not None:
            await conn.aclose()

    def _sync(self) -> SyncClient:
        """The app's blocking client (``enqueue_sync``, ``SyncJob``), shared by every thread."""
        return self._sync_client.get(self.redis_url, self.max_connections)

    def close(self) -> None:
        """Close the blocking client's connections (``enqueue_sync``; they reopen on next
        use); ``await app.aclose()`` closes an event loop's."""
        self._sync_client.close()

    async def __aenter__(self) -> App:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def ping(self) -> None:
        """Check that Redis answers; raises ``RedisUnavailable`` naming the URL if not."""
        await self._call(self.redis.ping())

    async def _call(self, awaitable: Awaitable[R]) -> R:
        try:
            return await awaitable
        except UNREACHABLE as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: BaseException) -> RedisUnavailable:
        """What a connection failure to this app's Redis raises: ``RedisUnavailable`` naming
        the URL (password hidden), or ``DatabaseMissing`` when the URL's database is not
        there (the async and the blocking client both raise it, ``sync.py``)."""
        url = redacted(self.redis_url)
        cause: BaseException | None = exc
        seen: set[int] = set()
        while cause is not None and not isinstance(cause, MissingDatabase):
            if id(cause) in seen:  # a cycle of contexts
                cause = None
                break
            seen.add(id(cause))
            cause = cause.__cause__ or cause.__context__  # redis-py may wrap it
        if cause is not None:
            return DatabaseMissing(f"redis_url {url!r}: {cause}")
        hint = tls_hint(self.redis_url, str(exc))
        return RedisUnavailable(f"cannot reach Redis at {url}: {exc}{hint}")

    # -- producing ------------------------------------------------------------------------

    async def enqueue(self, name: str, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """Enqueue a task by name, for producers that do not import the task's code.

        A registered name is checked against its signature and uses its queue and options.
        An app with tasks registered refuses any other name (``ValueError`` naming its
        tasks); an app with none (a producer) sends it to the default queue, and a worker
        that does not know it fails the job with a message naming it.
        """
        return await self._enqueue_call(self._named_call(name, args, kwargs, Options()))

    def enqueue_sync(self, name: str, /, *args: Any, **kwargs: Any) -> SyncJob[Any]:
        """``enqueue`` by name for code without an event loop: blocks for the one round trip
        and returns a ``SyncJob`` (``sync.py``)."""
        return enqueue_call(self, self._named_call(name, args, kwargs, Options()))

    def options(self, name: str, /, **options: Any) -> _NamedOptions:
        """Per-enqueue options for a task known only by name: ``app.options("x", queue=...)``."""
        return _NamedOptions(self, name, options)

    def _named_call(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: Options
    ) -> Call[Any]:
        return Call(self._named_task(name), args, kwargs, options)

    def _named_task(self, name: str) -> Task[Any, Any]:
        """The task registered as ``name``; a stand-in when the app has no tasks (a producer
        that does not import them); a ``ValueError`` naming the tasks it has otherwise, since
        a worker running this code would dead-letter the job."""
        task = self.tasks.get(name)
        if task is not None:
            return task
        if self.tasks:
            raise ValueError(
                f"no task named {name!r} on app {self.name!r} (its tasks: "
                f"{', '.join(sorted(self.tasks))}); a task's default name is its function's "
                "__name__, without the module"
            )
        return Task(self, _unknown, name=name, queue=self.route(name))

    def job(self, job_id: str, queue: str | None = None) -> Job[Any]:
        """A handle to an existing job id (no I/O); ``queue`` when it is not a known one."""
        return Job(self, job_id, queue)

    def job_sync(self, job_id: str, queue: str | None = None) -> SyncJob[Any]:
        """``job`` for code without an event loop: a ``SyncJob`` whose methods block."""
        return SyncJob(self, job_id, queue)

    def s(self, name: str, /, *args: Any, **kwargs: Any) -> Call[Any]:
        """A workflow step of a task known by name (``task.s()`` for producers that do not
        import the tasks); checked like ``app.enqueue``."""
        return self._named_call(name, args, kwargs, Options())

    def si(self, name: str, /, *args: Any, **kwargs: Any) -> Call[Any]:
        """An immutable workflow step of a task known by name (see ``task.si()``)."""
        return Call(self._named_task(name), args, kwargs, Options(), immutable=True)

    async def broadcast(self, name: str, /, *args: Any, **kwargs: Any) -> BroadcastJob[Any]:
        """Enqueue a broadcast task by name (``broadcast.py``): one copy per live worker of
        its queue. A registered task must be a broadcast one; an app with no tasks (a
        producer) sends it to the task's routed queue."""
        task = self._named_task(name)
        if self.tasks and not task.broadcast:
            raise TypeError(f"task {name!r} is not a broadcast task: use app.enqueue({name!r})")
        return await fan_out(self, Call(task, args, kwargs, Options()))

    def broadcast_job(self, broadcast_id: str, queue: str | None = None) -> BroadcastJob[Any]:
        """A handle to a broadcast by its id (``BroadcastJob.id``), e.g. in another process;
        ``queue`` defaults to the default queue (no I/O until it is used)."""
        return BroadcastJob(self, broadcast_id, queue or self.default_queue)

    def group_job(self, group_id: str, queue: str | None = None) -> GroupJob:
        """A handle to an enqueued group by its id (``GroupJob.id``), e.g. in another process
        (no I/O; without ``queue`` the first call finds it in the app's known queues)."""
        return GroupJob(self, group_id, queue)

    async def _enqueue_call(self, call: Call[R]) -> Job[R]:
        if call.task.broadcast:
            raise _not_broadcast(call)
        if call.options.on_success is not None or call.options.on_failure is not None:
            from .canvas import enqueue_call_with_callbacks

            return await enqueue_call_with_callbacks(self, call)
        queue, job = call.prepare()
        self._queues.add(queue)  # one of `queues` from now on
        durable = call.options.durable
        if queue in self.queue_limits or durable:
            waits = [call.options.wait_if_full]
            outcome = (await self._write([(queue, job)], waits, durable=durable))[0]
        else:  # the hot path: one script call, nothing to wait for
            prepared = ((queue, job),)
            spans = publish(prepared)
            keys = self.keys(queue)
            if spans is None:
                outcome = await self._call(self.scripts.enqueue_one(keys, job))
            else:
                with spans:
                    outcome = await self._call(self.scripts.enqueue_one(keys, job))
        return Job(self, _job_id(job, outcome), queue)

    async def enqueue_many(self, calls: Iterable[Call[R]]) -> list[Job[R]]:
        """Enqueue many calls in one round trip; each is idempotent on its job id.

        Every call is validated and encoded before anything is sent; the jobs go as one
        script call per 200 jobs of a queue, all written at once, except into a queue of
        ``queue_limits``: its jobs go in one script call, written all or none. When they do
        not fit, ``QueueFull`` names that queue (after waiting for room as long as the
        shortest ``wait_if_full`` of its calls asks); jobs of the same call to other queues
        are written all the same, and listed in the exception's ``written``.
        """
        calls = list(calls)
        for c in calls:
            if c.task.broadcast:
                raise _not_broadcast(c)
        prepared = [c.prepare() for c in calls]
        if not prepared:
            return []
        self._queues.update({q for q, _ in prepared})  # each one of `queues` from now on
        waits = [c.options.wait_if_full for c in calls]
        durable = any(c.options.durable for c in calls)
        outcomes = await self._write(prepared, waits, durable=durable)
        return [
            # bytes: the id of the job holding its dedup key (inline: the bulk path's cost)
            Job(self, o.decode() if o.__class__ is bytes else job[0], queue)
            for (queue, job), o in zip(prepared, outcomes, strict=True)
        ]

    async def _write(
        self,
        prepared: Sequence[tuple[str, list[Any]]],
        waits: Sequence[float | None],
        before: Sequence[bytes] = (),
        durable: bool = False,
    ) -> list[Any]:
        """Enqueue prepared jobs grouped by queue, honouring ``queue_limits``; one outcome
        per job (``Scripts.enqueue``). A refused queue is waited on for room as long as the
        shortest of its jobs' ``waits`` (``wait_if_full``; ``None`` is no wait) allows and
        tried again alone, else ``QueueFull``. ``durable``: as ``_send``'s."""
        by_queue: dict[str, list[int]] = {}
        for i, (queue, _) in enumerate(prepared):
            by_queue.setdefault(queue, []).append(i)
        if len(by_queue) == 1 and prepared[0][0] not in self.queue_limits:  # the usual case
            only = [(self.keys(prepared[0][0]), [job for _, job in prepared])]
            reply = (await self._send(only, prepared, before, durable=durable))[0]
            assert isinstance(reply, list)  # no limit: never refused
            return reply
        outcomes: list[Any] = [None] * len(prepared)
        deadlines: dict[str, float] = {}
        pending = list(by_queue)
        while True:
            batches = [(self.keys(q), [prepared[i][1] for i in by_queue[q]]) for q in pending]
            sent = [prepared[i] for q in pending for i in by_queue[q]]
            replies = await self._send(batches, sent, before, durable=durable)
            before = ()
            refused: list[tuple[str, int, bytes]] = []
            for q, reply in zip(pending, replies, strict=True):
                if isinstance(reply, tuple):
                    refused.append((q, *reply))
                else:
                    for i, o in zip(by_queue[q], reply, strict=True):
                        outcomes[i] = o
            if not refused:
                return outcomes
            pending = []
            for q, size, after in refused:
                if q not in deadlines:
                    wait = min((waits[i] or 0.0) for i in by_queue[q])
                    deadlines[q] = time.monotonic() + wait
                if not await wait_for_room(self, self.keys(q), after, deadlines[q]):
                    written: list[Job[Any]] = [
                        Job(self, _job_id(prepared[i][1], o), prepared[i][0])
                        for i, o in enumerate(outcomes)
                        if o is not None
                    ]
                    raise QueueFull(q, self.queue_limits[q], size, written)
                pending.append(q)

    async def _send(
        self,
        batches: list[tuple[QueueKeys, list[Any]]],
        prepared: Sequence[tuple[str, list[Any]]],
        before: Sequence[bytes] = (),
        limits: bool = True,
        durable: bool = False,
    ) -> list[list[Any] | tuple[int, bytes]]:
        """Enqueue prepared jobs, with the caller's trace context in each (``tracing.py``);
        ``before``: packed commands sent first in the same write (a workflow's records).
        ``limits``: apply ``queue_limits`` (a workflow checks them before it writes);
        ``durable``: return once a replica has them (``Scripts.enqueue``)."""
        spans = publish(prepared)  # None when no span was made (tracing is off)
        caps = self.queue_limits if limits else None
        if spans is None:
            return await self._call(self.scripts.enqueue(batches, before, caps, durable))
        with spans:
            return await self._call(self.scripts.enqueue(batches, before, caps, durable))

    async def _find_job(self, job_id: str, group: bool = False) -> QueueKeys:
        queues = self.queues
        action = f"find job {job_id!r} (EXISTS {self.keys(queues[0]).job(job_id)}, ...)"
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                keys = self.keys(q)
                pipe.exists(keys.flow(job_id) if group else keys.job(job_id))
            with explained(self.redis_url, action):
                found = await self._call(pipe.execute())
        for q, hit in zip(queues, found, strict=True):
            if hit:
                return self.keys(q)
        raise JobNotFound(job_id, queues)


class DatabaseMissing(RedisUnavailable, ValueError):
    """The URL names a database the server does not have: the URL is at fault, so this is a
    ``ValueError``; the CLI prints it as one line like any ``RedisUnavailable``."""


class _TaskDecorator:
    """What ``@app.task(...)`` returns: applies the options to the decorated function."""

    def __init__(
        self,
        app: App,
        name: str | None,
        queue: str | None,
        retries: int,
        backoff: Backoff,
        timeout: float | None,
        rate_limit: str | None = None,
        priority: int = 0,
        autoretry_for: AutoRetry | None = None,
        keyed: tuple[ConcurrencyKey | None, int | None, str | None] = (None, None, None),
    ) -> None:
        self.app = app
        self.name = name
        self.queue = queue
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.rate_limit = rate_limit
        self.priority = priority
        self.autoretry_for = autoretry_for
        self.keyed = keyed  # concurrency_key, key_concurrency, key_rate_limit
        self.broadcast = False

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    def __call__(self, fn: Callable[..., Any], /) -> Task[Any, Any]:
        name = self.name or getattr(fn, "__name__", None)
        if not name:
            raise ValueError(f"cannot infer a task name from {fn!r}; pass name=")
        queue = self.app.keys(self.queue or self.app.route(name)).queue
        task: Task[Any, Any] = Task(
            self.app, fn, name=name, queue=queue, retries=self.retries,
            backoff=self.backoff, timeout=self.timeout, rate_limit=self.rate_limit,
            priority=self.priority, autoretry_for=self.autoretry_for, broadcast=self.broadcast,
            concurrency_key=self.keyed[0], key_concurrency=self.keyed[1],
            key_rate_limit=self.keyed[2],
        )  # fmt: skip
        self.app._register(task)
        return task


class _BroadcastDecorator:
    """What ``@app.task(broadcast=True, ...)`` returns: registers a ``BroadcastTask``."""

    def __init__(self, decorator: _TaskDecorator) -> None:
        self._decorator = decorator
        decorator.broadcast = True

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> BroadcastTask[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> BroadcastTask[P, R]: ...

    def __call__(self, fn: Callable[..., Any], /) -> BroadcastTask[Any, Any]:
        return BroadcastTask(self._decorator(fn))


class _CronDecorator:
    """What ``@app.cron(...)`` returns: registers the function (or task) and its schedule."""

    def __init__(
        self,
        app: App,
        expression: str | None,
        every: float | None,
        timezone: tzinfo,
        catch_up: CatchUp,
        grace: float,
        queue: str | None,
        retries: int,
        timeout: float | None,
        priority: int = 0,
    ) -> None:
        self.app = app
        self.expression = expression
        self.every = every
        self.timezone = timezone
        self.catch_up = catch_up
        self.grace = grace
        self.queue = queue
        self.retries = retries
        self.timeout = timeout
        self.priority = priority

    @overload
    def __call__(self, fn: Task[P, R], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    def __call__(self, fn: Any, /) -> Task[Any, Any]:
        name = fn.name if isinstance(fn, Task) else getattr(fn, "__name__", repr(fn))
        if self.expression is not None:  # checked before the function becomes a task
            CronSchedule(name, self.expression, timezone=self.timezone)
        task: Task[Any, Any]
        if isinstance(fn, Task):
            task = fn
        else:
            task = self.app.task(
                queue=self.queue, retries=self.retries, timeout=self.timeout,
                priority=self.priority,
            )(fn)  # fmt: skip
        try:
            task.check_arguments((), {})
        except TypeError:
            raise ValueError(
                f"cron task {task.name!r} must take no arguments (ticks call it with none)"
            ) from None
        self.app._add_cron(
            CronSchedule(
                task.name, self.expression, self.every, self.timezone, self.catch_up, self.grace
            )
        )
        return task


class _NamedOptions:
    def __init__(self, app: App, name: str, options: dict[str, Any]) -> None:
        self._app = app
        self._name = name
        self._task = app._named_task(name)
        self._options = self._task.options(**options)._options

    async def enqueue(self, *args: Any, **kwargs: Any) -> Job[Any]:
        call = Call(self._task, args, kwargs, self._options)
        return await self._app._enqueue_call(call)

    def enqueue_sync(self, *args: Any, **kwargs: Any) -> SyncJob[Any]:
        return enqueue_call(self._app, Call(self._task, args, kwargs, self._options))

    def call(self, *args: Any, **kwargs: Any) -> Call[Any]:
        return Call(self._task, args, kwargs, self._options)

    def s(self, *args: Any, **kwargs: Any) -> Call[Any]:
        """A workflow step with these options (see ``Task.s``)."""
        return Call(self._task, args, kwargs, self._options)

    def si(self, *args: Any, **kwargs: Any) -> Call[Any]:
        """An immutable workflow step with these options (see ``Task.si``)."""
        return Call(self._task, args, kwargs, self._options, immutable=True)


def _job_id(job: list[Any], outcome: Any) -> str:
    """The id of the job an enqueue resolved to: its own, or (bytes) the one holding its
    dedup key."""
    return outcome.decode() if isinstance(outcome, bytes) else str(job[0])


def _not_broadcast(call: Call[Any]) -> TypeError:
    return TypeError(
        f"task {call.task.name!r} is a broadcast task: enqueue it with its BroadcastTask "
        f"(await {call.task.name}.enqueue(...)) or app.broadcast({call.task.name!r}, ...), which "
        "return a BroadcastJob"
    )


def _unknown(*args: Any, **kwargs: Any) -> Any:
    """Stands for a task this process only knows by name (any arguments are accepted)."""
    raise RuntimeError("a task known only by name cannot run in this process")
