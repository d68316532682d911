"""``Task[P, R]``: a registered function, its options, and typed enqueueing."""

from __future__ import annotations

import inspect
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from .keys import PRIORITIES, validate_name
from .message import encode_call, job_fields, timeout_text
from .ratelimit import RateLimit, parse_rate
from .signing import sign_job

if TYPE_CHECKING:
    from .app import App
    from .job import Job
    from .sync import SyncJob

P = ParamSpec("P")
R = TypeVar("R")

Backoff = float | Callable[[int], float]
"""Base seconds of exponential backoff with jitter, or a function attempt -> seconds."""

MAX_JOB_ID = 256


@dataclass(frozen=True, slots=True)
class Options:
    """What one enqueue asks for; ``None`` means the task's default."""

    job_id: str | None = None
    queue: str | None = None
    retries: int | None = None
    timeout: float | None = None
    delay: float = 0.0
    eta: datetime | None = None
    expires: float | None = None  # seconds after the enqueue
    expires_at: datetime | None = None
    priority: int | None = None


class Call(Generic[R]):
    """One call of a task, ready to be enqueued alone or in bulk by ``app.enqueue_many``."""

    __slots__ = ("args", "kwargs", "options", "task")

    def __init__(
        self, task: Task[Any, R], args: tuple[Any, ...], kwargs: dict[str, Any], options: Options
    ) -> None:
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.options = options

    def prepare(self) -> tuple[str, list[Any]]:
        """Validate and encode: the queue, and the job's values for the enqueue script (job id,
        delay ms, eta ms, expires-in ms, expires-at ms, then ``job_fields``). Writes nothing."""
        task, opts = self.task, self.options
        task.check_arguments(self.args, self.kwargs)
        args, kwargs = encode_call(task.name, self.args, self.kwargs)
        queue = opts.queue or task.queue
        retries = task.retries if opts.retries is None else opts.retries
        timeout = task.timeout if opts.timeout is None else opts.timeout
        priority = task.priority if opts.priority is None else opts.priority
        job_id = opts.job_id or os.urandom(16).hex()
        eta_ms = 0 if opts.eta is None else _epoch_ms(opts.eta)
        expires_in = 0 if opts.expires is None else max(1, round(opts.expires * 1000))
        expires_at = 0 if opts.expires_at is None else _epoch_ms(opts.expires_at)
        signer = task.app._signer
        sig = b""
        if signer is not None:  # every job is encoded here, so every job is signed here
            t = timeout_text(timeout)
            sig = sign_job(
                signer, task.app.name, queue, job_id, task.name, args, kwargs, int(retries), t
            )
        fields = job_fields(task.name, queue, args, kwargs, retries, timeout, priority, sig)
        delay = round(opts.delay * 1000)
        return queue, [job_id, delay, eta_ms, expires_in, expires_at, *fields]


class Task(Generic[P, R]):
    """A function registered with ``@app.task``.

    Calling it runs the function directly; ``await task.enqueue(...)`` sends it to a worker
    and returns a ``Job[R]``, typed by the function's own signature.
    """

    def __init__(
        self,
        app: App,
        fn: Callable[P, Any],
        *,
        name: str,
        queue: str,
        retries: int = 0,
        backoff: Backoff = 1.0,
        timeout: float | None = None,
        rate_limit: str | None = None,
        priority: int = 0,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@app.task needs a function, got {fn!r}")
        if retries < 0:
            raise ValueError(f"task {name!r}: retries must be >= 0, got {retries!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"task {name!r}: timeout must be > 0 seconds, got {timeout!r}")
        if not callable(backoff) and backoff < 0:
            raise ValueError(f"task {name!r}: backoff must be >= 0 seconds, got {backoff!r}")
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.priority = check_priority(f"task {name!r}", priority)
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.rate_limit: RateLimit | None = None if rate_limit is None else parse_rate(rate_limit)
        self.is_async = inspect.iscoroutinefunction(fn)
        self._signature = inspect.signature(fn)
        params = self._signature.parameters.values()
        plain = all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params)
        # positional calls of a plain signature are checked by counting, not by bind()
        self._plain_arity = len(params) if plain else -1
        self._defaults = Options()
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name!r} queue={self.queue!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.fn(*args, **kwargs)

    def options(
        self,
        *,
        job_id: str | None = None,
        queue: str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
        expires: float | timedelta | datetime | None = None,
        priority: int | None = None,
    ) -> TaskOptions[P, R]:
        """The same task with per-enqueue options.

        ``delay`` (seconds or timedelta) or ``eta`` (datetime; naive means UTC) keep the job
        scheduled until then; ``expires`` (seconds or timedelta after the enqueue, or a
        datetime) ends it ``expired`` if it has not started by then; ``priority`` 0-9 (higher
        starts first within its queue) overrides the task's.
        """
        opts = _options(self.name, job_id, queue, retries, timeout, delay, eta, expires, priority)
        return TaskOptions(self, opts)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Send one call to the task's queue; returns its ``Job`` (one round trip)."""
        return await self.app._enqueue_call(Call(self, args, kwargs, self._defaults))

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> SyncJob[R]:
        """``enqueue`` for code without an event loop (Django, Flask, scripts): blocks for
        the one round trip and returns a ``SyncJob[R]`` whose methods block (``sync.py``).
        ``RuntimeError`` from a thread that runs an event loop: it would block it."""
        from .sync import enqueue_call

        return enqueue_call(self.app, Call(self, args, kwargs, self._defaults))

    def call(self, *args: P.args, **kwargs: P.kwargs) -> Call[R]:
        """A call to enqueue later, e.g. many at once with ``app.enqueue_many``."""
        return Call(self, args, kwargs, self._defaults)

    def job(self, job_id: str) -> Job[R]:
        """A typed handle to an existing job of this task (no I/O)."""
        from .job import Job

        return Job(self.app, job_id, self.queue)

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise ``TypeError`` naming the task when the arguments do not fit its signature."""
        if not kwargs and len(args) == self._plain_arity:
            return
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {self.name!r} called with bad arguments: {exc}") from None

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before the attempt after ``attempt`` failed: exponential, jittered."""
        if callable(self.backoff):
            return max(0.0, float(self.backoff(attempt)))
        base = self.backoff * (2 ** min(attempt - 1, 16))
        return float(base * random.uniform(0.5, 1.0))


class TaskOptions(Generic[P, R]):
    """A task with options applied by ``task.options(...)``; enqueue it like the task."""

    __slots__ = ("_options", "task")

    def __init__(self, task: Task[P, R], options: Options) -> None:
        self.task = task
        self._options = options

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        return await self.task.app._enqueue_call(Call(self.task, args, kwargs, self._options))

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> SyncJob[R]:
        from .sync import enqueue_call

        return enqueue_call(self.task.app, Call(self.task, args, kwargs, self._options))

    def call(self, *args: P.args, **kwargs: P.kwargs) -> Call[R]:
        return Call(self.task, args, kwargs, self._options)

    def options(self, **changes: Any) -> TaskOptions[P, R]:
        merged = {k: getattr(self._options, k) for k in Options.__slots__}
        merged.update(changes)
        return self.task.options(**merged)


def _options(
    task: str,
    job_id: str | None,
    queue: str | None,
    retries: int | None,
    timeout: float | None,
    delay: float | timedelta | None,
    eta: datetime | None,
    expires: float | timedelta | datetime | None = None,
    priority: int | None = None,
) -> Options:
    if job_id is not None and (not isinstance(job_id, str) or not job_id):
        raise ValueError(f"task {task!r}: job_id must be a non-empty string, got {job_id!r}")
    if job_id is not None and len(job_id) > MAX_JOB_ID:
        raise ValueError(f"task {task!r}: job_id is longer than {MAX_JOB_ID} characters")
    if retries is not None and retries < 0:
        raise ValueError(f"task {task!r}: retries must be >= 0, got {retries!r}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"task {task!r}: timeout must be > 0 seconds, got {timeout!r}")
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay or 0.0)
    if seconds < 0:
        raise ValueError(f"task {task!r}: delay must not be negative, got {delay!r}")
    if eta is not None and not isinstance(eta, datetime):
        raise TypeError(f"task {task!r}: eta must be a datetime, got {eta!r}")
    expires_in: float | None = None
    expires_at: datetime | None = None
    if isinstance(expires, datetime):
        expires_at = expires
    elif expires is not None:
        expires_in = expires.total_seconds() if isinstance(expires, timedelta) else float(expires)
        if not expires_in > 0:
            raise ValueError(f"task {task!r}: expires must be > 0 seconds, got {expires!r}")
    if queue is not None:
        validate_name("queue", queue)
    if priority is not None:
        check_priority(f"task {task!r}", priority)
    return replace(
        Options(), job_id=job_id, queue=queue, retries=retries, timeout=timeout,
        delay=seconds, eta=eta, expires=expires_in, expires_at=expires_at, priority=priority,
    )  # fmt: skip


def check_priority(owner: str, priority: object) -> int:
    """A priority is an int from 0 (the default, lowest) to 9 (highest)."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"{owner}: priority must be an int from 0 to 9, got {priority!r}")
    if not 0 <= priority < PRIORITIES:
        raise ValueError(
            f"{owner}: priority must be from 0 (lowest) to {PRIORITIES - 1}, got {priority!r}"
        )
    return priority


def _epoch_ms(when: datetime) -> int:
    """Naive datetimes are taken as UTC (documented); aware ones keep their offset."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(1, round(when.timestamp() * 1000))
