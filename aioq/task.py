"""``Task[P, R]``: a registered function, its options, and typed enqueueing."""

from __future__ import annotations

import inspect
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from .dedup import NO_DEDUP
from .dedup import check as check_dedup
from .dedup import seconds as check_seconds
from .dedup import values as dedup_values
from .keys import PRIORITIES, validate_name
from .message import encode_call, job_fields, timeout_text
from .ratelimit import RateLimit, parse_rate
from .signing import sign_job

if TYPE_CHECKING:
    from .app import App
    from .job import Job
    from .sync import SyncJob

P = ParamSpec("P")
Q = ParamSpec("Q")
R = TypeVar("R")

Backoff = float | Callable[[int], float]
"""Base seconds of exponential backoff with jitter, or a function attempt -> seconds."""

AutoRetry = type[BaseException] | tuple[type[BaseException], ...]
"""``autoretry_for``: the exception types whose failures are retried (subclasses too)."""

MAX_JOB_ID = 256
MAX_KEY = 256
"""Characters a concurrency key may have at most (it is part of Redis key names)."""

ConcurrencyKey = str | Callable[..., str]
"""``concurrency_key``: one key for every job, or a function of the job's arguments."""


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
    on_success: Call[Any] | None = None  # enqueued with the result as first argument
    on_failure: Call[Any] | None = None  # enqueued with the job's id once it failed for good
    durable: bool = False  # the enqueue returns once a replica has the job (WAIT)
    unique_for: float | None = None  # seconds after the job finished that its key stays held
    unique_key: str | None = None  # the dedup/debounce key (default: hash of the arguments)
    debounce: float | None = None  # seconds after the latest enqueue of the key it is due
    wait_if_full: float | None = None  # seconds to wait for room in a full queue (queue_limits)
    concurrency_key: str | None = None  # the job's key (else the task's concurrency_key)


class _Piped:
    """Stands for the value a workflow step receives from its predecessor, when its
    arguments are checked against the task's signature before anything is written."""

    def __repr__(self) -> str:
        return "<the previous step's result>"


PIPED: Any = _Piped()


class Call(Generic[R]):
    """One call of a task, ready to be enqueued alone or in bulk by ``app.enqueue_many``, or
    as a step of a workflow (``task.s()``; ``task.si()`` makes an ``immutable`` one, which
    never receives the previous step's result)."""

    __slots__ = ("args", "immutable", "kwargs", "options", "task")

    def __init__(
        self,
        task: Task[Any, R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: Options,
        immutable: bool = False,
    ) -> None:
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.options = options
        self.immutable = immutable

    def __repr__(self) -> str:
        shown = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task.name}.{'si' if self.immutable else 's'}({', '.join(shown)})"

    @property
    def queue(self) -> str:
        return self.options.queue or self.task.queue

    def prepare(
        self,
        *,
        job_id: str | None = None,
        piped: bool = False,
        then: bytes = b"",
        flow: str = "",
        hold: int | None = None,
        for_worker: str = "",
    ) -> tuple[str, list[Any]]:
        """Validate and encode: the queue, and the job's values for the enqueue script (job id,
        delay ms, eta ms, expires-in ms, expires-at ms, ``job_fields``, then the workflow's:
        ``then``, ``flow`` and ``hold``, the signature, the dedup value (``dedup.py``), the
        worker a broadcast copy is for, then the concurrency key and its limits, see
        ``enqueue_job.lua``). Writes nothing; a ``concurrency_key`` function runs here.

        ``piped``: the job receives its predecessor's result as its first positional argument
        (a mutable step of a workflow), so the arguments are checked with it in front."""
        task, opts = self.task, self.options
        if piped:
            try:
                task.check_arguments((PIPED, *self.args), self.kwargs)
            except TypeError as exc:
                raise TypeError(
                    f"{self!r} receives the previous step's result as its first argument: "
                    f"{exc} (use .si() for a step that takes no result)"
                ) from None
        else:
            task.check_arguments(self.args, self.kwargs)
        args, kwargs = encode_call(task.name, self.args, self.kwargs)
        queue = opts.queue or task.queue
        retries = task.retries if opts.retries is None else opts.retries
        timeout = task.timeout if opts.timeout is None else opts.timeout
        priority = task.priority if opts.priority is None else opts.priority
        job_id = job_id or opts.job_id or os.urandom(16).hex()
        eta_ms = 0 if opts.eta is None else _epoch_ms(opts.eta)
        expires_in = 0 if opts.expires is None else max(1, round(opts.expires * 1000))
        expires_at = 0 if opts.expires_at is None else _epoch_ms(opts.expires_at)
        signer = task.app._signer
        sig = b""
        if signer is not None:  # every job is encoded here, so every job is signed here
            t = timeout_text(timeout)
            sig = sign_job(
                signer, task.app.name, queue, job_id, task.name, args, kwargs, int(retries), t,
                piped,
            )  # fmt: skip
        fields = job_fields(task.name, queue, args, kwargs, retries, timeout, priority)
        delay = round(opts.delay * 1000)
        held = "" if hold is None else max(1, hold)
        dedup = NO_DEDUP
        if opts.unique_for is not None or opts.debounce is not None:
            if then or flow or hold is not None:
                raise ValueError(
                    f"{self!r}: unique_for=/debounce= apply to jobs enqueued alone, not to a "
                    "workflow's steps or jobs with on_success=/on_failure= (a duplicate would "
                    "leave the workflow without its step)"
                )
            dedup, then, debounce_ms = dedup_values(task, opts, queue, self.args, self.kwargs)
            delay = debounce_ms or delay
        key = self._concurrency_key(piped)
        limits = task.key_limits if key else ""  # "" with a key: the workers' declared ones
        return queue, [
            job_id, delay, eta_ms, expires_in, expires_at, *fields, then, flow, held, sig, dedup,
            for_worker, key, limits,
        ]  # fmt: skip

    def _concurrency_key(self, piped: bool) -> str:
        """The job's concurrency key ("" for none): the one given to ``options``, else the
        task's, computed from the job's arguments when it is a function."""
        task = self.task
        if self.options.concurrency_key is not None:
            return self.options.concurrency_key
        source = task.concurrency_key
        if source is None or isinstance(source, str):
            return source or ""
        name = getattr(source, "__name__", None) or repr(source)
        if piped:
            raise TypeError(
                f"task {task.name!r}: its concurrency_key function {name} needs the job's "
                "arguments, and this workflow step gets its first one from the previous step "
                "when that ends: give the key with .options(concurrency_key=...), or use .si()"
            )
        try:
            value = source(*self.args, **self.kwargs)
        except Exception as exc:
            raise ValueError(
                f"task {task.name!r}: its concurrency_key function {name} raised "
                f"{type(exc).__name__}: {exc} for {_shown(self.args, self.kwargs)}"
            ) from exc
        return check_key(
            task.name, value, f"its concurrency_key function {name} returned", self.args,
            self.kwargs,
        )  # fmt: skip


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
        autoretry_for: AutoRetry | None = None,
        broadcast: bool = False,
        concurrency_key: ConcurrencyKey | None = None,
        key_concurrency: int | None = None,
        key_rate_limit: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@app.task needs a function, got {fn!r}")
        if retries < 0:
            raise ValueError(f"task {name!r}: retries must be >= 0, got {retries!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"task {name!r}: timeout must be > 0 seconds, got {timeout!r}")
        if broadcast and rate_limit is not None:
            raise ValueError(
                f"task {name!r}: a broadcast task runs once per worker when enqueued; "
                f"rate_limit={rate_limit!r} does not apply to it"
            )
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
        #: None: a failure of any exception is retried (while retries are left)
        self.autoretry_for = (
            None if autoretry_for is None else _exception_types(name, autoretry_for)
        )
        #: each enqueue runs once on every live worker serving the queue (``broadcast.py``)
        self.broadcast = bool(broadcast)
        if concurrency_key is not None and not callable(concurrency_key):
            check_key(name, concurrency_key, "concurrency_key is")
        self.concurrency_key = concurrency_key
        self.key_concurrency = _key_concurrency(name, key_concurrency)
        self.key_rate_limit: RateLimit | None = (
            None if key_rate_limit is None else _rate(name, "key_rate_limit", key_rate_limit)
        )
        #: how the enqueue script gets a keyed job's limits (``keyed.lua``): "<concurrency>
        #: <rate n> <rate period ms>", 0 for none; "" when the task declares none (the script
        #: then uses what the workers' code declares, else one at a time: a producer that knows
        #: the task by name only gets the task's limits)
        self.key_limits = ""
        if self.key_concurrency or self.key_rate_limit:
            rate = self.key_rate_limit.wire if self.key_rate_limit else "0 0"
            self.key_limits = f"{self.key_concurrency or 0} {rate}"
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
        on_success: Call[Any] | None = None,
        on_failure: Call[Any] | None = None,
        durable: bool = False,
        unique_for: float | timedelta | None = None,
        unique_key: str | None = None,
        debounce: float | timedelta | None = None,
        wait_if_full: float | timedelta | None = None,
        concurrency_key: str | None = None,
    ) -> TaskOptions[P, R]:
        """The same task with per-enqueue options.

        ``delay`` (seconds or timedelta) or ``eta`` (datetime; naive means UTC) keep the job
        scheduled until then; ``expires`` (seconds or timedelta after the enqueue, or a
        datetime) ends it ``expired`` if it has not started by then; ``priority`` 0-9 (higher
        starts first within its queue) overrides the task's. ``on_success=notify.s()`` is
        enqueued with the result as its first argument once the job succeeds;
        ``on_failure=alert.s()`` with the job's id once it has failed for good (after its
        retries), never on an attempt that is retried. ``durable=True``: the enqueue returns
        only once a replica of the master has the job too (Redis ``WAIT``, up to
        ``DURABLE_TIMEOUT`` seconds, else ``NotDurable``), so a failover to that replica keeps
        it (see docs/deploying.md, "Redis Cluster and Sentinel").

        ``unique_for=seconds``: while a job of this task with the same key is queued,
        scheduled or running, or finished less than ``seconds`` ago, enqueueing returns that
        job and writes nothing. ``debounce=seconds``: one job per key waits, with the latest
        arguments, until ``seconds`` after the latest enqueue. The key is ``unique_key``, or a
        hash of the arguments (``dedup.py``). ``wait_if_full=seconds``: a queue at its
        ``App(queue_limits=...)`` limit is waited on for room that long before ``QueueFull``.

        ``concurrency_key="tenant-7"`` is the job's key (instead of the task's
        ``concurrency_key``), limited by the task's ``key_concurrency`` and ``key_rate_limit``
        (one at a time when it has neither).
        """
        opts = _options(self.name, job_id, queue, retries, timeout, delay, eta, expires, priority)
        if not isinstance(durable, bool):
            raise TypeError(f"task {self.name!r}: durable must be True or False, got {durable!r}")
        if durable:
            opts = replace(opts, durable=True)
        if unique_for is not None or debounce is not None or unique_key is not None:
            u, d, k = check_dedup(
                self.name, unique_for, debounce, unique_key, opts.delay, eta is not None, job_id
            )
            opts = replace(opts, unique_for=u, debounce=d, unique_key=k)
        if wait_if_full is not None:
            w = check_seconds(self.name, "wait_if_full", wait_if_full, 0.0, False)
            opts = replace(opts, wait_if_full=w)
        if concurrency_key is not None:
            opts = replace(
                opts, concurrency_key=check_key(self.name, concurrency_key, "concurrency_key is")
            )
        for role, cb in (("on_success", on_success), ("on_failure", on_failure)):
            if cb is not None and not isinstance(cb, Call):
                raise TypeError(
                    f"task {self.name!r}: {role} must be a task's call (task.s() or "
                    f"task.si()), got {cb!r}"
                )
        if on_success is not None or on_failure is not None:
            opts = replace(opts, on_success=on_success, on_failure=on_failure)
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

    # ``s()`` is typed twice: with every argument (a chain's first step, or a call enqueued
    # alone), and with all but the first, which a later step gets from its predecessor.
    @overload
    def s(self, *args: P.args, **kwargs: P.kwargs) -> Call[R]: ...
    @overload
    def s(self: Task[Concatenate[Any, Q], R], *args: Q.args, **kwargs: Q.kwargs) -> Call[R]: ...

    def s(self, *args: Any, **kwargs: Any) -> Call[R]:
        """A step of a workflow (the same as ``call``): in a chain it receives the previous
        step's result as its FIRST positional argument, ``add.s(10)`` being ``add(prev, 10)``;
        a chord's callback receives the list of its members' results."""
        return Call(self, args, kwargs, self._defaults)

    def si(self, *args: P.args, **kwargs: P.kwargs) -> Call[R]:
        """An immutable step: called with exactly these arguments, never the previous result."""
        return Call(self, args, kwargs, self._defaults, immutable=True)

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

    def retries_on(self, exc: BaseException) -> bool:
        """Whether a failure with ``exc`` may be retried: any exception, unless
        ``autoretry_for`` names the types that may (``raise Retry`` always retries)."""
        return self.autoretry_for is None or isinstance(exc, self.autoretry_for)

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

    @overload
    def s(self, *args: P.args, **kwargs: P.kwargs) -> Call[R]: ...
    @overload
    def s(
        self: TaskOptions[Concatenate[Any, Q], R], *args: Q.args, **kwargs: Q.kwargs
    ) -> Call[R]: ...

    def s(self, *args: Any, **kwargs: Any) -> Call[R]:
        """A workflow step with these options (see ``Task.s``)."""
        return Call(self.task, args, kwargs, self._options)

    def si(self, *args: P.args, **kwargs: P.kwargs) -> Call[R]:
        """An immutable workflow step with these options (see ``Task.si``)."""
        return Call(self.task, args, kwargs, self._options, immutable=True)

    def options(self, **changes: Any) -> TaskOptions[P, R]:
        merged = {k: getattr(self._options, k) for k in Options.__slots__}
        merged["expires"] = merged.pop("expires_at") or merged["expires"]  # options() splits it
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


def _exception_types(task: str, types: object) -> tuple[type[BaseException], ...]:
    """``autoretry_for`` as a tuple of exception classes; a ``TypeError`` naming the task and
    the first thing in it that is not one."""
    items = (types,) if isinstance(types, type) else types
    if not isinstance(items, tuple | list | set | frozenset):
        raise TypeError(
            f"task {task!r}: autoretry_for must be an exception class or a tuple of them, "
            f"got {types!r}"
        )
    for t in items:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise TypeError(f"task {task!r}: autoretry_for must hold exception classes, got {t!r}")
    return tuple(items)


def check_key(
    task: str,
    value: object,
    what: str,
    args: tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> str:
    """A concurrency key is a non-empty string of at most MAX_KEY characters; ``what`` says
    where the value comes from, and ``args``/``kwargs`` the call a function got."""
    called = "" if args is None else f" for {_shown(args, kwargs or {})}"
    if not isinstance(value, str):
        raise TypeError(
            f"task {task!r}: {what} {value!r} ({type(value).__name__}){called}; a concurrency "
            "key must be a string"
        )
    if not value:
        raise ValueError(f"task {task!r}: {what} an empty string{called}; a key must not be empty")
    if len(value) > MAX_KEY:
        raise ValueError(
            f"task {task!r}: {what} a key of {len(value)} characters{called}; at most {MAX_KEY}"
        )
    return value


def _key_concurrency(task: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"task {task!r}: key_concurrency must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"task {task!r}: key_concurrency must be >= 1, got {value!r}")
    return value


def _rate(task: str, option: str, value: str) -> RateLimit:
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise ValueError(f"task {task!r}: {option}: {exc}") from None


def _shown(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A call's arguments as a reader would write them: "(1, 'a', x=2)"."""
    return "(" + ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())]) + ")"


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
