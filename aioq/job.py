"""``Job[R]``: a handle to one enqueued job, and what can be learnt about it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .acl import explained
from .connection import pack
from .errors import JobCancelled, JobNotFound, TaskFailed
from .keys import key_group
from .message import history_field, key_member, key_of
from .results import subscribe_confirmed

if TYPE_CHECKING:
    from .app import App
    from .keys import QueueKeys

R = TypeVar("R")


class JobStatus(StrEnum):
    """Where a job is in its life; the values are the strings stored in Redis."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def finished(self) -> bool:
        """True for the final states, after which the job never runs again."""
        return self in _FINISHED


_FINISHED = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
)
KEY_LIMIT = "key limit"
"""The ``wait_reason`` of a queued job waiting for a place on its concurrency key (it is in
its key's list, ``scripts/keyed.lua``, and holds no place there)."""
STATE_FIELDS = ("status", "result", "error", "exc_type", "traceback")
_PROGRESS_RECHECK = 5.0  # seconds without a message before progress() re-reads the record


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A snapshot of a job record (times are UTC datetimes, Redis server time)."""

    id: str
    task: str
    queue: str
    status: JobStatus
    attempts: int
    retries: int
    args: list[Any]
    kwargs: dict[str, Any]
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    error: str | None
    exc_type: str | None
    traceback: str | None
    progress: Any
    worker: str | None
    priority: int = 0
    #: earlier attempts' failures, oldest first (``message.history_field``): a job that
    #: succeeded after retries has ``error`` None and its failed attempts here
    history: list[dict[str, Any]] = field(default_factory=list)
    #: a scheduled job's due time (its score in the scheduled set) and why it waits: "delay",
    #: "retry" (backoff), "rate limit", "key rate limit" or "debounce"; a queued job's
    #: wait_reason is "key limit" while it waits for a place on its concurrency key; else both
    #: ``None``
    due_at: datetime | None = None
    wait_reason: str | None = None
    #: the workflow (chain, group, chord) the job is a step of: its id, ``None`` for a job
    #: enqueued alone; ``aioq job`` lists the workflow's steps
    workflow: str | None = None
    #: the job's concurrency key (``concurrency_key``), ``None`` for a job without one
    concurrency_key: str | None = None


class Job(Generic[R]):
    """A handle to a job id; every method is one round trip to Redis (no polling).

    ``app.job(id)`` makes one without I/O; without ``queue`` the first call finds the job in
    the app's known queues.
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
        return f"<Job {self.id!r} queue={self.queue!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id and other.queue == self.queue

    def __hash__(self) -> int:
        return hash((self.id, self.queue))

    async def _resolve(self) -> QueueKeys:
        if self._keys is None:
            self._keys = await self._app._find_job(self.id)
        return self._keys

    async def status(self) -> JobStatus:
        """The job's current status; raises ``JobNotFound`` when there is no such job."""
        keys = await self._resolve()
        key = keys.job(self.id)
        with explained(self._app.redis_url, f"read job {self.id!r} (HGET {key})"):
            raw: bytes | None = await self._app.redis.hget(key, "status")  # type: ignore[assignment]
        if raw is None:
            raise JobNotFound(self.id, [keys.queue])
        return JobStatus(raw.decode())

    async def done(self) -> bool:
        """``True`` once the job is in a final state (succeeded, failed, cancelled, expired),
        ``False`` while it is queued, scheduled or running; Celery's ``AsyncResult.ready()``.
        Raises ``JobNotFound`` like ``status()``. It never waits: ``result()`` does."""
        return (await self.status()).finished

    async def info(self) -> JobInfo:
        """Everything recorded about the job."""
        keys = await self._resolve()
        action = f"read job {self.id!r} (HGETALL {keys.job(self.id)}, ZSCORE {keys.scheduled})"
        async with self._app.redis.pipeline(transaction=False) as pipe:  # one round trip
            pipe.hgetall(keys.job(self.id))
            pipe.zscore(keys.scheduled, self.id)
            with explained(self._app.redis_url, action):
                raw, due = await pipe.execute()
        if not raw:
            raise JobNotFound(self.id, [keys.queue])
        info = record_info(self.id, keys.queue, {k.decode(): v for k, v in raw.items()}, due)
        member = key_member(raw.get(b"keyed"), info.priority, self.id)
        if info.status is JobStatus.QUEUED and info.concurrency_key and member:
            # queued with a key: on its stream if it holds a place, else waiting for one
            group = key_group(info.task, info.concurrency_key)
            if await self._app.redis.lpos(keys.keyrun(group), member) is None:
                info = replace(info, wait_reason=KEY_LIMIT)
        return info

    async def cancel(self) -> bool:
        """Cancel the job; ``False`` when it had already finished (nothing changes then).

        A queued or scheduled job never starts. A running job's coroutine is cancelled by its
        worker, signalled over Redis; its status becomes ``cancelled`` and ``result()``
        raises ``JobCancelled``. A step of a workflow (chain, group, chord) cancels every
        step of the workflow that has not finished.
        """
        keys = await self._resolve()
        with explained(self._app.redis_url, f"read job {self.id!r} (HGET {keys.job(self.id)})"):
            flow = await self._app.redis.hget(keys.job(self.id), "flow")
        outcome = await self._app.scripts.cancel(keys, self.id, self._app.result_ttl)
        if outcome < 0:
            raise JobNotFound(self.id, [keys.queue])
        if flow:
            from .handover import cancel_workflow

            await cancel_workflow(self._app, flow.decode() if isinstance(flow, bytes) else flow)
        return outcome > 0

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the job to finish and return its value.

        Raises ``TaskFailed`` when its last attempt raised, ``JobCancelled`` when it was
        cancelled, and the builtin ``TimeoutError`` when it has not finished in ``timeout``
        seconds (``None`` waits for ever). The wait is pushed through the process's shared
        subscription, never polled.
        """
        keys = await self._resolve()
        action = f"wait for job {self.id!r} (SUBSCRIBE {keys.done(self.id)}, HMGET its record)"
        with explained(self._app.redis_url, action):
            return await self._wait(keys, timeout)

    async def _wait(self, keys: QueueKeys, timeout: float | None) -> R:
        deadline = None if timeout is None else time.monotonic() + timeout
        conn = self._app._connection()
        read = pack("HMGET", keys.job(self.id), *STATE_FIELDS)
        # over RESP3 the subscription reads the state itself, right behind the SUBSCRIBE
        async with conn.results.watch(keys.done(self.id), read) as w:
            state, w.state = w.state, None
            while True:
                if w.error is not None:  # a resubscription (after a reconnection) refused
                    raise w.error
                w.event.clear()
                pushed, w.message = w.message, None
                if pushed is not None:  # the outcome, when the message carries it all
                    outcome = self._pushed(pushed)
                    if outcome is not None:
                        return outcome[0]  # type: ignore[no-any-return]
                if state is None:  # after a reconnection, or a message without the outcome
                    (state,) = await conn.lane.call(read)  # the fast path, as enqueue's
                if isinstance(state, Exception):
                    raise state
                if state[0] is None:
                    raise JobNotFound(self.id, [keys.queue])
                status = JobStatus(state[0].decode())
                if status.finished:
                    return self._outcome(status, state)  # type: ignore[no-any-return]
                state = None
                if w.event.is_set():
                    continue  # pushed while reading
                if deadline is None:
                    await w.event.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"job {self.id!r} did not finish within {timeout}s (status {status.value})"
                    )
                try:
                    async with asyncio.timeout(remaining):
                        await w.event.wait()
                except TimeoutError:
                    continue  # re-read once more, then raise above

    async def progress(self) -> AsyncIterator[Any]:
        """Stream the job's progress: ``async for p in job.progress(): ...``.

        Yields the value stored when the iteration starts (if any), then each value the task
        sets with ``current_job().set_progress()``, in order, and ends when the job reaches a
        final state (at once for a job that had already finished). Pushed over a pub/sub
        subscription; the stored record is re-read after a lost connection and after 5 s
        without a message, so the latest value and the end are never missed (intermediate
        values published while disconnected may be). Leaving the loop early: wrap the
        iterator in ``contextlib.aclosing`` to unsubscribe at once.
        """
        keys = await self._resolve()
        action = f"follow job {self.id!r} (SUBSCRIBE {keys.progress(self.id)}, HMGET its record)"
        with explained(self._app.redis_url, action):
            async with contextlib.aclosing(self._progress(keys)) as values:  # closed with us
                async for value in values:
                    yield value

    async def _progress(self, keys: QueueKeys) -> AsyncGenerator[Any]:
        key, redis = keys.job(self.id), self._app.redis
        channels = (keys.progress(self.id).encode(), keys.done(self.id).encode())
        seen, delay = 0, 0.05
        while True:
            pubsub: Any = redis.pubsub()
            try:
                await subscribe_confirmed(pubsub, channels)  # before reading the state
                delay = 0.05
                msg = None
                while True:
                    if msg is None:
                        # first, and after a quiet spell: the stored state (the client may have
                        # reconnected underneath and lost messages published meanwhile)
                        state: list[bytes | None] = await redis.hmget(  # type: ignore[assignment]
                            key, ("status", "progress", "progress_seq")
                        )
                        if state[0] is None:
                            raise JobNotFound(self.id, [keys.queue])
                        if state[1] is not None and _int(state[2]) > seen:
                            seen = _int(state[2])
                            yield _json(state[1])
                        if _finished(state[0]):
                            return
                    elif msg.get("type") == "message":
                        if msg["channel"] == channels[1]:
                            return  # final: every earlier progress message arrived before it
                        head, _, data = msg["data"].partition(b" ")
                        if _int(head) > seen:
                            seen = _int(head)
                            yield _json(data)
                    msg = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_PROGRESS_RECHECK
                    )
            except (RedisConnectionError, RedisTimeoutError, OSError):
                await asyncio.sleep(delay)  # then resubscribe and re-read the stored state
                delay = min(delay * 2, 2.0)
            finally:
                await pubsub.aclose()

    def _pushed(self, message: bytes) -> tuple[Any] | None:
        return pushed_outcome(self.id, message)

    def _outcome(self, status: JobStatus, state: list[bytes | None]) -> Any:
        return outcome(self.id, status, state)


def pushed_outcome(job_id: str, message: bytes) -> tuple[Any] | None:
    """``(value,)`` (or the raised outcome) from a ``done`` message, None when it does not
    carry the whole outcome or cannot be read: then the record is read instead."""
    state = _pushed_state(message)
    if state is None:
        return None
    try:
        return (outcome(job_id, JobStatus(state[0].decode()), state),)  # type: ignore[union-attr]
    except orjson.JSONDecodeError:
        return None


def outcome(job_id: str, status: JobStatus, state: list[bytes | None]) -> Any:
    """A finished job's value from its ``STATE_FIELDS``, or the exception it ended with."""
    _, result, error, exc_type, tb = state
    if status is JobStatus.SUCCEEDED:
        return orjson.loads(result) if result is not None else None
    if status is JobStatus.CANCELLED:
        if error:  # a workflow step cancelled because an earlier step failed
            raise TaskFailed(
                job_id,
                exc_type.decode(errors="replace") if exc_type else "Error",
                error.decode(errors="replace"),
                tb.decode(errors="replace") if tb else "",
            )
        raise JobCancelled(job_id)
    message = error.decode(errors="replace") if error else status.value
    if status is JobStatus.EXPIRED:
        raise TaskFailed(job_id, "JobExpired", message)
    raise TaskFailed(
        job_id,
        exc_type.decode(errors="replace") if exc_type else "Error",
        message,
        tb.decode(errors="replace") if tb else "",
    )


def _pushed_state(message: bytes) -> list[bytes | None] | None:
    """The ``STATE_FIELDS`` of a final outcome carried by a ``done`` message ("<status>
    <payload>", see ``finish`` in scripts/worker.py), or None when the message does not carry
    it all (a bare status, an outcome too large to carry, another program's message): the
    caller reads the record then."""
    head, _, payload = message.partition(b" ")
    if head == b"cancelled" and not payload:
        return [head, None, None, None, None]
    if not payload:
        return None
    if head == b"succeeded":
        return [head, payload, None, None, None]
    if head in (b"failed", b"expired", b"cancelled"):
        try:
            o = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(o, dict):
            return None
        fields = [o.get(k) for k in ("error", "exc_type", "traceback")]
        if not all(v is None or isinstance(v, str) for v in fields):
            return None
        return [head, None, *(v.encode() if v is not None else None for v in fields)]
    return None


def _finished(status: bytes) -> bool:
    try:
        return JobStatus(status.decode()).finished
    except ValueError:  # not ours: nothing will ever finish it
        return True


def _ms(value: bytes | None) -> datetime | None:
    ms = _int(value)
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


def _int(value: bytes | None) -> int:
    """A number field; 0 when missing or garbage (another program may write the record:
    info() must still describe it, like the worker that failed it)."""
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _text(value: bytes | None) -> str | None:
    return value.decode(errors="replace") if value else None


def _json(value: bytes | None, default: Any = None) -> Any:
    if value is None:
        return default
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value.decode(errors="replace")


def record_info(
    job_id: str, queue: str, raw: dict[str, bytes], due: float | None = None
) -> JobInfo:
    try:
        status = JobStatus(raw.get("status", b"").decode())
    except ValueError:
        status = JobStatus.FAILED
    waiting = status is JobStatus.SCHEDULED  # a stale score or reason means nothing then
    return JobInfo(
        id=job_id,
        task=_text(raw.get("task")) or "",
        queue=_text(raw.get("queue")) or queue,
        status=status,
        attempts=_int(raw.get("attempts")),
        retries=_int(raw.get("retries")),
        args=_json(raw.get("args"), []),
        kwargs=_json(raw.get("kwargs"), {}),
        enqueued_at=_ms(raw.get("enqueued_at")),
        started_at=_ms(raw.get("started_at")),
        finished_at=_ms(raw.get("finished_at")),
        result=_json(raw.get("result")),
        error=_text(raw.get("error")),
        exc_type=_text(raw.get("exc_type")),
        traceback=_text(raw.get("traceback")),
        progress=_json(raw.get("progress")),
        worker=_text(raw.get("worker")),
        priority=_int(raw.get("priority")),
        history=history_field(raw.get("history")),
        due_at=datetime.fromtimestamp(due / 1000, tz=UTC) if waiting and due else None,
        wait_reason=_text(raw.get("wait")) if waiting else None,
        workflow=(_text(raw.get("flow")) or " ").partition(" ")[2] or None,
        concurrency_key=key_of(raw.get("keyed")),
    )
