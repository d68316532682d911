"""Running one started job and turning its outcome into a completion record."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import traceback
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from redis.exceptions import RedisError

from .. import tracing
from ..context import JobContext, _current
from ..errors import Retry
from ..keys import QueueKeys
from ..message import Delivery, encode_result, parse_delivery
from .complete import Record

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer
    from redis.asyncio import Redis

    from ..metrics import JobObserver
    from .core import Worker

log = logging.getLogger("aioq.worker")


class Runner:
    """Starts an asyncio task per delivered job and tracks what is running, per stream: the
    ``QueueKeys`` level of the job's priority (entry ids are unique within one stream only)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.app = worker.app
        self.running: dict[QueueKeys, dict[bytes, asyncio.Task[None]]] = {}
        # (queue name, job id) -> (level, entry id)
        self.entries: dict[tuple[str, str], tuple[QueueKeys, bytes]] = {}
        # (level, entry id) of jobs whose job.cancel() arrived (ids repeat across levels)
        self.cancelling: set[tuple[QueueKeys, bytes]] = set()
        self.redis: Redis  # set when the worker opens (it runs in one event loop)
        self._threads = anyio.CapacityLimiter(min(worker.concurrency, 64))
        self.observer: JobObserver | None = None  # set when metrics or job logs are on
        self.started = 0  # jobs delivered to this worker (``max_jobs`` counts them)

    def __len__(self) -> int:
        return sum(len(r) for r in self.running.values())

    def start(self, keys: QueueKeys, rows: list[Any]) -> None:
        """Run every job of a batch the fetch/start/reclaim scripts returned for a queue."""
        levels = keys.levels
        loop = asyncio.get_running_loop()
        complete = self.worker.completer.add
        tracer = tracing.tracer()  # None (the usual case) unless a tracer provider is set
        for row in rows:
            level = levels[row[8]]  # the stream of the job's priority
            running = self.running.get(level)
            if running is None:
                running = self.running[level] = {}
            if row[0] in running:  # never a second copy of an entry this worker runs
                log.error("entry %s on %s is running already; not started again",
                          row[0].decode(errors="replace"), level.queue)  # fmt: skip
                self.worker.slots.give(1)
                continue
            d, problem = parse_delivery(row)
            if problem is None and d.task not in self.app.tasks:
                known = ", ".join(sorted(self.app.tasks)) or "none"
                problem = f"unknown task {d.task!r} (this worker knows: {known})"
            if problem is not None:
                log.error("job %s is not runnable: %s", d.job_id, problem)
                # row[1]: the raw id, which a job id that is not UTF-8 needs to name its record
                complete(level, ("dead", d.entry_id, row[1], d.attempt, problem, "BadJob", "", 0))
                self.worker.slots.give(1)
                continue
            t: asyncio.Task[Any]
            if tracer is None:
                t = loop.create_task(self._run(level, d))
            else:
                t = loop.create_task(self._run_traced(level, d, tracer))
            running[d.entry_id] = t
            self.entries[level.queue, d.job_id] = (level, d.entry_id)
        self.started += len(rows)
        limit = self.worker.max_jobs
        if limit is not None and self.started >= limit:  # once per batch: no per-job cost
            self.worker.recycle(f"{self.started} jobs taken (the limit is {limit})")

    def interrupt(self, keys: QueueKeys, entry_id: bytes) -> bool:
        """Cancel a running job without recording an outcome (lease lost, or shutdown)."""
        t = self.running.get(keys, {}).get(entry_id)
        if t is None or t.done():
            return False
        t.cancel()
        return True

    def cancel_job(self, queue: str, job_id: str) -> bool:
        """Cancel a running job on behalf of ``job.cancel()``: it ends ``cancelled``."""
        held = self.entries.get((queue, job_id))
        if held is None:
            return False
        keys, entry_id = held
        if not self.interrupt(keys, entry_id):
            return False
        self.cancelling.add((keys, entry_id))
        return True

    def interrupt_all(self) -> int:
        n = 0
        for keys, running in self.running.items():
            for entry_id in list(running):
                n += self.interrupt(keys, entry_id)
        return n

    async def _run_traced(self, keys: QueueKeys, d: Delivery, tracer: Tracer) -> None:
        """``_run`` inside the attempt's process span (``tracing.py``)."""
        span = tracing.processing(tracer, keys.queue, d, self.worker.consumer)
        record: Record | None = None
        try:
            record = await self._run(keys, d, write_now=False)
        finally:
            if span is not None:
                span.end(record)
        if record is not None and self._idle(keys):
            await self._write_now()

    async def _run(self, keys: QueueKeys, d: Delivery, write_now: bool = True) -> Record | None:
        """Run one attempt; returns its completion record (None: interrupted, nothing is
        recorded), which it has handed to the completer (and, ``write_now``, written at once
        if its queue had no backlog, see ``_write_now``)."""
        task = self.app.tasks[d.task]
        token = _current.set(JobContext(self.redis, keys, d.job_id, d.task, d.attempt))
        timeout = d.timeout
        record: Record | None = None
        deadline: asyncio.Timeout | None = None
        obs = self.observer
        t0 = obs.started(keys.queue, d) if obs is not None else 0.0
        try:
            if timeout is None and task.is_async:  # the hot path: no timer, no thread
                value = await task.fn(*d.args, **d.kwargs)
            else:
                deadline = asyncio.timeout(timeout)
                async with deadline:
                    if task.is_async:
                        value = await task.fn(*d.args, **d.kwargs)
                    else:
                        value = await self._in_thread(
                            functools.partial(task.fn, *d.args, **d.kwargs)
                        )
            result = encode_result(d.task, value)
            record = ("ok", d.entry_id, d.job_id, d.attempt, result, "", "", 0)
        except Retry as exc:
            record = self._retry(d, exc, round(exc.delay * 1000))
        except asyncio.CancelledError:
            if (keys, d.entry_id) in self.cancelling:
                record = ("cancelled", d.entry_id, d.job_id, d.attempt, "", "", "", 0)
                return record
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # lease lost or worker stopping: whoever runs it next records it
            cancelled = asyncio.CancelledError()
            record = self._failure(d, task.backoff_delay, _describe(cancelled),
                                   task.retries_on(cancelled))  # fmt: skip
        except TimeoutError as exc:
            if deadline is not None and deadline.expired():
                msg = f"task {d.task!r} timed out after {timeout:g}s (attempt {d.attempt})"
                record = self._failure(d, task.backoff_delay, ("TimeoutError", msg, _tb(exc)),
                                       task.retries_on(exc))  # fmt: skip
            else:
                record = self._failure(d, task.backoff_delay, _describe(exc), task.retries_on(exc))
        except (Exception, SystemExit) as exc:
            record = self._failure(d, task.backoff_delay, _describe(exc), task.retries_on(exc))
        finally:
            _current.reset(token)
            if self.running[keys].get(d.entry_id) is asyncio.current_task():
                del self.running[keys][d.entry_id]
                self.entries.pop((keys.queue, d.job_id), None)
            self.cancelling.discard((keys, d.entry_id))
            self.worker.slots.give(1)
            if obs is not None:
                obs.finished(keys.queue, d, None if record is None else record[0], t0)
            if record is not None:
                self.worker.completer.add(keys, record)
        if write_now and record is not None and self._idle(keys):
            await self._write_now()
        return record

    def _idle(self, keys: QueueKeys) -> bool:
        """Whether the job's queue had no backlog (its fetcher found it empty and parked, and
        delivered this job) and no write is under way: then ``_write_now``."""
        return keys.levels[0] in self.worker.idle and self.worker.completer.writable_now()

    async def _write_now(self) -> None:
        """Write the buffered outcomes from this job's task: the outcome goes to Redis in
        this turn of the event loop, before the fetcher's next read, instead of a turn later
        from the completer's loop (the round trip of an awaited job, RPC style). With a
        backlog the completer's loop writes them in batches as before, after the fetcher's
        next read (so Redis starts the next batch first). An error here leaves the records
        buffered for that loop, which retries."""
        with contextlib.suppress(RedisError, OSError):
            await self.worker.completer.flush()

    async def _in_thread(self, call: functools.partial[Any]) -> Any:
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=self._threads)

    def _retry(self, d: Delivery, exc: BaseException, delay_ms: int) -> Record:
        exc_type, message, tb = _describe(exc)
        return ("retry", d.entry_id, d.job_id, d.attempt, message, exc_type, tb, delay_ms)

    def _failure(
        self, d: Delivery, backoff: Any, described: tuple[str, str, str], retryable: bool = True
    ) -> Record:
        """The record of a failed attempt: a retry while retries are left and the task
        retries this exception (``autoretry_for``), else the job's failure."""
        exc_type, message, tb = described
        if retryable and d.attempt <= d.retries:
            delay_ms = round(backoff(d.attempt) * 1000)
            log.info(
                "job %s (%s) attempt %d failed: %s: %s; retrying in %.2fs",
                d.job_id, d.task, d.attempt, exc_type, message, delay_ms / 1000,
            )  # fmt: skip
            return ("retry", d.entry_id, d.job_id, d.attempt, message, exc_type, tb, delay_ms)
        not_listed = "" if retryable else " (not retried: not one of its autoretry_for)"
        log.warning("job %s (%s) failed: %s: %s%s", d.job_id, d.task, exc_type, message,
                    not_listed if d.attempt <= d.retries else "")  # fmt: skip
        return ("fail", d.entry_id, d.job_id, d.attempt, message, exc_type, tb, 0)


def _describe(exc: BaseException) -> tuple[str, str, str]:
    return type(exc).__name__, str(exc) or type(exc).__name__, _tb(exc)


def _tb(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))
