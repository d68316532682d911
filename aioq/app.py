"""``App``: configuration, the task registry, and the producer side of enqueueing."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, ParamSpec, TypeVar, overload

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .connection import CommandLane, make_client
from .errors import JobNotFound, RedisUnavailable
from .job import Job
from .keys import QueueKeys, validate_name
from .results import ResultListener
from .scripts import Scripts
from .task import Backoff, Call, Options, Task

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class _Connection:
    """The Redis client, scripts and result subscription of one event loop."""

    def __init__(self, url: str, max_connections: int) -> None:
        self.redis: Redis = make_client(url, max_connections)
        self.lane = CommandLane(self.redis, size=min(max_connections, 64))
        self.scripts = Scripts(self.lane)
        self.results = ResultListener(self.redis)

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
    job is poison and goes to the dead-letter stream.
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
    ) -> None:
        self.name = validate_name("app", name)
        self.redis_url = redis_url or os.environ.get("AIOQ_REDIS_URL") or DEFAULT_REDIS_URL
        if visibility_timeout <= 0:
            raise ValueError(f"visibility_timeout must be > 0 seconds, got {visibility_timeout!r}")
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be >= 1, got {max_deliveries!r}")
        self.visibility_timeout = float(visibility_timeout)
        self.result_ttl = int(result_ttl)
        self.max_deliveries = int(max_deliveries)
        self.default_queue = validate_name("queue", default_queue)
        self.dead_letter_max = int(dead_letter_max)
        self.max_connections = max_connections
        self.tasks: dict[str, Task[Any, Any]] = {}
        self._keys: dict[str, QueueKeys] = {}
        self._queues: set[str] = {self.default_queue}
        self._connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connection] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"<App {self.name!r} redis={self.redis_url!r}>"

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
    ) -> _TaskDecorator: ...

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
    ) -> Task[Any, Any] | _TaskDecorator:
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., ...)``."""
        decorator = _TaskDecorator(self, name, queue, retries, backoff, timeout)
        return decorator if fn is None else decorator(fn)

    def _register(self, task: Task[Any, Any]) -> None:
        if task.name in self.tasks:
            raise ValueError(
                f"a task named {task.name!r} is already registered on app {self.name!r}"
            )
        self.tasks[task.name] = task
        self._queues.add(task.queue)

    @property
    def queues(self) -> list[str]:
        """Every queue this app knows of: the default one and those of its tasks."""
        return sorted(self._queues)

    def keys(self, queue: str | None = None) -> QueueKeys:
        """The key layout of one queue (default: the app's default queue)."""
        queue = queue or self.default_queue
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = QueueKeys(self.name, validate_name("queue", queue))
            self._queues.add(queue)
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

    def _results(self) -> ResultListener:
        return self._connection().results

    async def aclose(self) -> None:
        """Close this event loop's connections (they reopen on next use)."""
        conn = self._connections.pop(asyncio.get_running_loop(), None)
        if conn is not None:
            await conn.aclose()

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
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RedisUnavailable(f"cannot reach Redis at {self.redis_url}: {exc}") from exc

    # -- producing ------------------------------------------------------------------------

    async def enqueue(self, name: str, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """Enqueue a task by name, for producers that do not import the task's code.

        A registered name is checked against its signature and uses its queue and options;
        any other name goes to the default queue, and a worker that does not know it fails
        the job with a message naming it.
        """
        return await self._enqueue_call(self._named_call(name, args, kwargs, Options()))

    def options(self, name: str, /, **options: Any) -> _NamedOptions:
        """Per-enqueue options for a task known only by name: ``app.options("x", queue=...)``."""
        return _NamedOptions(self, name, options)

    def _named_call(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: Options
    ) -> Call[Any]:
        task = self.tasks.get(name)
        if task is None:
            task = Task(self, _unknown, name=name, queue=self.default_queue)
        return Call(task, args, kwargs, options)

    def job(self, job_id: str, queue: str | None = None) -> Job[Any]:
        """A handle to an existing job id (no I/O); ``queue`` when it is not a known one."""
        return Job(self, job_id, queue)

    async def _enqueue_call(self, call: Call[R]) -> Job[R]:
        job_id, queue, delay_ms, eta_ms, fields = call.prepare()
        keys = self.keys(queue)
        await self._call(self.scripts.enqueue([(keys, [(job_id, delay_ms, eta_ms, fields)])]))
        return Job(self, job_id, queue)

    async def enqueue_many(self, calls: Iterable[Call[R]]) -> list[Job[R]]:
        """Enqueue many calls in one round trip; each is idempotent on its job id.

        Every call is validated and encoded before anything is sent; the jobs go as one
        script call per 200 jobs of a queue, all written at once.
        """
        prepared = [c.prepare() for c in calls]
        if not prepared:
            return []
        by_queue: dict[str, list[Any]] = {}
        for job_id, queue, delay_ms, eta_ms, fields in prepared:
            by_queue.setdefault(queue, []).append((job_id, delay_ms, eta_ms, fields))
        batches = [(self.keys(q), jobs) for q, jobs in by_queue.items()]
        await self._call(self.scripts.enqueue(batches))
        return [Job(self, p[0], p[1]) for p in prepared]

    async def _find_job(self, job_id: str) -> QueueKeys:
        queues = self.queues
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.exists(self.keys(q).job(job_id))
            found = await self._call(pipe.execute())
        for q, hit in zip(queues, found, strict=True):
            if hit:
                return self.keys(q)
        raise JobNotFound(job_id, queues)


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
    ) -> None:
        self.app = app
        self.name = name
        self.queue = queue
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    def __call__(self, fn: Callable[..., Any], /) -> Task[Any, Any]:
        name = self.name or getattr(fn, "__name__", None)
        if not name:
            raise ValueError(f"cannot infer a task name from {fn!r}; pass name=")
        queue = self.app.keys(self.queue).queue
        task: Task[Any, Any] = Task(
            self.app, fn, name=name, queue=queue, retries=self.retries,
            backoff=self.backoff, timeout=self.timeout,
        )  # fmt: skip
        self.app._register(task)
        return task


class _NamedOptions:
    def __init__(self, app: App, name: str, options: dict[str, Any]) -> None:
        self._app = app
        self._name = name
        task = app.tasks.get(name)
        self._task = task or Task(app, _unknown, name=name, queue=app.default_queue)
        self._options = self._task.options(**options)._options

    async def enqueue(self, *args: Any, **kwargs: Any) -> Job[Any]:
        call = Call(self._task, args, kwargs, self._options)
        return await self._app._enqueue_call(call)

    def call(self, *args: Any, **kwargs: Any) -> Call[Any]:
        return Call(self._task, args, kwargs, self._options)


def _unknown(*args: Any, **kwargs: Any) -> Any:
    """Stands for a task this process only knows by name (any arguments are accepted)."""
    raise RuntimeError("a task known only by name cannot run in this process")
