"""Broadcast tasks: ``@app.task(broadcast=True)`` runs each enqueue once on every worker
live on the task's queue at that moment (cache flushes, config reloads).

Enqueueing reads the app's heartbeat hash (``views.worker_stats``: workers that beat within
``STALE_AFTER`` seconds) and writes one *copy* per live worker serving the queue: an ordinary
job of the queue, its id ``<broadcast id>.<n>``, whose record names the worker it is for
(``for``), plus the broadcast's record (``keys.broadcast``: worker -> copy id), all in one
round trip after the read. A copy waits in the queue's stream like any job (behind a backlog,
by priority). Whichever worker reads its entry: the worker it is for starts it as usual;
any other hands it over (``scripts/broadcast.lua``), moving the entry into that worker's
pending list (its lease) and telling it on its ``handed`` channel; that worker takes it at
once (``worker/broadcast.py``) and runs it beside its other jobs, without waiting for a
slot. So each copy runs on its worker, once, with the usual leases, retries, timeouts and
results.

A worker that dies or stops before its copy finishes: the copy's lease lapses, and the
worker that takes the entry over fails it (``exc_type`` ``WorkerLost``) instead of running
it, since it is no one else's; so ``BroadcastJob.result()`` ends one ``visibility_timeout``
(plus a reclaim interval) after a live worker reaches it. No live worker on the queue at
enqueue: ``NoLiveWorkers``, nothing written. A worker that starts after the enqueue gets no
copy.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, overload

from .connection import pack
from .errors import AioqError, JobNotFound, NoLiveWorkers, QueueFull
from .job import Job, JobStatus
from .task import Call, Options, Task

if TYPE_CHECKING:
    from .app import App
    from .keys import QueueKeys

P = ParamSpec("P")
R = TypeVar("R")

_REFUSED = ("job_id", "unique_for", "unique_key", "debounce", "on_success", "on_failure")


class BroadcastTask(Generic[P, R]):
    """A task registered with ``@app.task(broadcast=True)``: ``await t.enqueue(...)`` runs it
    once on every live worker of its queue and returns a ``BroadcastJob[R]``. Calling it runs
    the function here. The registered ``Task`` (what workers run) is ``t.task``."""

    __slots__ = ("__wrapped__", "task")

    def __init__(self, task: Task[P, R]) -> None:
        self.task = task
        self.__wrapped__ = task.fn

    def __repr__(self) -> str:
        return f"<BroadcastTask {self.task.name!r} queue={self.task.queue!r}>"

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def queue(self) -> str:
        return self.task.queue

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.task.fn(*args, **kwargs)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> BroadcastJob[R]:
        """One copy per live worker of the queue, in one round trip after reading who is
        live; ``NoLiveWorkers`` when none is (nothing written)."""
        return await fan_out(self.task.app, Call(self.task, args, kwargs, Options()))

    def options(self, **options: Any) -> BroadcastOptions[P, R]:
        """Per-enqueue options, as ``Task.options`` takes them (``queue``, ``retries``,
        ``timeout``, ``delay``, ``eta``, ``expires``, ``priority``, ``wait_if_full``);
        ``job_id``, ``unique_for``/``debounce`` and ``on_success``/``on_failure`` do not
        apply to a broadcast (``TypeError``)."""
        refused = sorted(set(options) & set(_REFUSED))
        if refused:
            raise TypeError(
                f"broadcast task {self.name!r}: {', '.join(refused)} do(es) not apply to a "
                "broadcast (it makes one job per worker)"
            )
        return BroadcastOptions(self, self.task.options(**options)._options)

    def job(self, broadcast_id: str) -> BroadcastJob[R]:
        """A handle to a broadcast of this task by its id (one read on first use)."""
        return BroadcastJob(self.task.app, broadcast_id, self.task.queue)


class BroadcastOptions(Generic[P, R]):
    """A broadcast task with options applied: enqueue it like the task."""

    __slots__ = ("_options", "_task")

    def __init__(self, task: BroadcastTask[P, R], options: Options) -> None:
        self._task = task
        self._options = options

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> BroadcastJob[R]:
        call = Call(self._task.task, args, kwargs, self._options)
        return await fan_out(self._task.task.app, call)


class BroadcastJob(Generic[R]):
    """One broadcast: a copy per worker that was live on the queue when it was enqueued.

    ``jobs`` maps each worker's consumer name (as ``aioq info`` lists workers) to its copy's
    ``Job``; ``result()`` waits for every copy. ``app.broadcast_job(id, queue)`` gets the
    handle back in another process.
    """

    __slots__ = ("_app", "_jobs", "_keys", "id")

    def __init__(
        self,
        app: App,
        broadcast_id: str,
        queue: str,
        jobs: dict[str, Job[R]] | None = None,
    ) -> None:
        self._app = app
        self.id = broadcast_id
        self._keys: QueueKeys = app.keys(queue)
        self._jobs = jobs

    def __repr__(self) -> str:
        return f"<BroadcastJob {self.id!r} queue={self._keys.queue!r}>"

    @property
    def queue(self) -> str:
        return self._keys.queue

    async def copies(self) -> dict[str, Job[R]]:
        """Worker consumer name -> its copy's ``Job`` (read once from the record when the
        handle was not made by the enqueue); ``JobNotFound`` when there is no such broadcast."""
        if self._jobs is None:
            raw: dict[bytes, bytes] = await self._app._call(
                self._app.redis.hgetall(self._keys.broadcast(self.id))  # type: ignore[arg-type]
            )
            if not raw:
                raise JobNotFound(self.id, [self._keys.queue])
            self._jobs = {
                w.decode(errors="replace"): Job(self._app, j.decode(), self._keys.queue)
                for w, j in sorted(raw.items())
            }
        return dict(self._jobs)

    @property
    def workers(self) -> list[str]:
        """The workers the broadcast went to (known once ``copies()`` has been read; the
        enqueue's handle knows them at once)."""
        return sorted(self._jobs or ())

    async def status(self) -> dict[str, JobStatus]:
        """Each worker's copy's status."""
        copies = await self.copies()
        states = await asyncio.gather(*(j.status() for j in copies.values()))
        return dict(zip(copies, states, strict=True))

    @overload
    async def result(
        self, timeout: float | None = None, *, return_exceptions: Literal[False] = False
    ) -> dict[str, R]: ...
    @overload
    async def result(
        self, timeout: float | None = None, *, return_exceptions: Literal[True]
    ) -> dict[str, R | AioqError]: ...

    async def result(
        self, timeout: float | None = None, *, return_exceptions: bool = False
    ) -> dict[str, R] | dict[str, R | AioqError]:
        """Wait for every copy; worker consumer name -> its copy's return value.

        A copy that failed raises its ``TaskFailed`` (``exc_type`` ``WorkerLost`` when its
        worker died or stopped before it finished), one cancelled ``JobCancelled``; with
        ``return_exceptions=True`` those are the dict's values instead, as with
        ``asyncio.gather``. ``TimeoutError`` when not every copy finished in ``timeout``
        seconds. Pushed, like ``Job.result()``.
        """
        copies = await self.copies()
        waits = [j.result() for j in copies.values()]
        async with asyncio.timeout(timeout):
            if return_exceptions:
                got = await asyncio.gather(*waits, return_exceptions=True)
                out: dict[str, Any] = {}
                for worker, value in zip(copies, got, strict=True):
                    if isinstance(value, BaseException) and not isinstance(value, AioqError):
                        raise value
                    out[worker] = value
                return out
            return dict(zip(copies, await asyncio.gather(*waits), strict=True))

    async def cancel(self) -> int:
        """Cancel every copy not finished; how many were."""
        copies = await self.copies()
        done = await asyncio.gather(*(j.cancel() for j in copies.values()))
        return sum(done)


async def fan_out(app: App, call: Call[R]) -> BroadcastJob[R]:
    """Write one copy of ``call`` per live worker of its queue, and the broadcast's record."""
    from .views import worker_stats

    queue = call.queue
    live = sorted(w.consumer for w in await worker_stats(app) if queue in w.queues)
    call.prepare()  # its arguments and options checked before anything is sent (or raised)
    if not live:
        raise NoLiveWorkers(call.task.name, queue)
    broadcast_id = os.urandom(12).hex()
    plain = Call(call.task, call.args, call.kwargs, replace(call.options, job_id=None))
    prepared = [
        plain.prepare(job_id=f"{broadcast_id}.{n}", for_worker=worker)
        for n, worker in enumerate(live)
    ]
    keys = app.keys(queue)
    record = keys.broadcast(broadcast_id)
    pairs = [v for worker, (_, job) in zip(live, prepared, strict=True) for v in (worker, job[0])]
    ttl = app.workflow_ttl + app.result_ttl  # as long as a workflow's records
    before = [pack("HSET", record, *pairs), pack("EXPIRE", record, ttl)]
    app._queues.add(queue)
    try:
        await app._write(prepared, [call.options.wait_if_full] * len(prepared), before)
    except QueueFull:
        await app._call(app.redis.delete(record))  # sent before the refusal: take it back
        raise
    jobs = {w: Job[R](app, job[0], queue) for w, (_, job) in zip(live, prepared, strict=True)}
    return BroadcastJob(app, broadcast_id, queue, jobs)
