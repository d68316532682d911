"""Every exception aioq raises or asks tasks to raise.

    AioqError
     ├── TaskFailed          job.result(): the job's last attempt raised
     ├── JobCancelled        job.result(): the job was cancelled
     ├── JobNotFound         a Job handle whose id exists in none of the app's queues
     ├── PermissionDenied    Redis refused a command for the URL's ACL user (NOPERM)
     ├── QueueFull           enqueue into a queue at its ``queue_limits`` limit
     ├── NoLiveWorkers       a broadcast enqueued while no live worker serves its queue
     └── RedisUnavailable    the configured Redis does not answer

    Retry                    raised *inside* a task to ask for another attempt

Waiting for a result that is not ready in time raises the builtin ``TimeoutError``;
arguments that cannot be encoded as JSON raise the builtin ``TypeError`` before anything
is written to Redis.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

__all__ = [
    "AioqError",
    "JobCancelled",
    "JobNotFound",
    "NoLiveWorkers",
    "PermissionDenied",
    "QueueFull",
    "RedisUnavailable",
    "Retry",
    "TaskFailed",
]


class AioqError(Exception):
    """Base class of the errors aioq raises."""


class TaskFailed(AioqError):
    """Raised by ``job.result()`` when the job's final attempt raised an exception.

    ``str()`` is the remote message; ``exc_type`` names the remote exception class and
    ``traceback`` is the remote traceback as text.
    """

    def __init__(self, job_id: str, exc_type: str, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.job_id = job_id
        self.exc_type = exc_type
        self.traceback = traceback

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.job_id, self.exc_type, str(self), self.traceback))


class JobCancelled(AioqError):
    """Raised by ``job.result()`` when the job was cancelled before it finished."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} was cancelled")
        self.job_id = job_id


class JobNotFound(AioqError):
    """Raised by ``Job`` methods when the job id exists in none of the app's known queues."""

    def __init__(self, job_id: str, queues: list[str]) -> None:
        names = ", ".join(repr(q) for q in queues)
        super().__init__(f"no job {job_id!r} in queues {names} (finished jobs expire)")
        self.job_id = job_id


class PermissionDenied(AioqError):
    """Raised when Redis refuses a command for the URL's ACL user (NOPERM): by producers,
    ``Job``/``SyncJob`` methods and a starting worker. The message names the user, what was
    refused (the command, the script, the keys or channel) and the patterns an aioq user of
    the app needs (``aioq.acl``)."""

    def __init__(self, message: str, user: str) -> None:
        super().__init__(message)
        self.user = user


class QueueFull(AioqError):
    """Raised by ``enqueue``, ``enqueue_many`` and a workflow's ``enqueue()`` when the jobs
    would take a queue of ``App(queue_limits=...)`` past its limit; nothing of the refused
    queue was written. With ``options(wait_if_full=seconds)`` it is raised only once that long
    has passed without room.

    ``queue``, ``limit`` and ``size`` (the jobs the queue held: queued, running and scheduled)
    name the refusal; ``written`` holds the jobs of the same ``enqueue_many`` call that went
    to other queues and were written (empty for a single enqueue).
    """

    def __init__(self, queue: str, limit: int, size: int, written: list[Any] | None = None) -> None:
        super().__init__(
            f"queue {queue!r} is full: it holds {size} job(s) not finished and its limit is "
            f"{limit} (App(queue_limits=...)); nothing was enqueued to it"
        )
        self.queue = queue
        self.limit = limit
        self.size = size
        self.written: list[Any] = written or []

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.queue, self.limit, self.size, self.written))


class NoLiveWorkers(AioqError):
    """Raised by a broadcast task's ``enqueue()`` when no live worker (one whose heartbeat is
    fresh) serves its queue: a broadcast runs on the workers live when it is enqueued, so there
    would be none to run it. Nothing is written."""

    def __init__(self, task: str, queue: str) -> None:
        super().__init__(
            f"broadcast of task {task!r}: no live worker serves queue {queue!r}, so no one "
            "would run it (nothing was enqueued)"
        )
        self.task = task
        self.queue = queue

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.task, self.queue))


class RedisUnavailable(AioqError, ConnectionError):
    """Raised when the configured Redis cannot be reached; the message names the URL."""


class NotDurable(AioqError):
    """Raised by an enqueue with ``durable=True`` when no replica acknowledged its jobs within
    ``DURABLE_TIMEOUT`` seconds (none is connected, or replication lags). The jobs are written
    on the master and will run, but a failover before the master replicates them would lose
    them; enqueueing them again with the same job ids is safe (it writes nothing twice).
    ``job_ids`` names them."""

    def __init__(self, job_ids: list[str], replicas: int) -> None:
        self.job_ids = job_ids
        shown = ", ".join(job_ids[:3]) + (
            f" and {len(job_ids) - 3} more" if len(job_ids) > 3 else ""
        )
        super().__init__(
            f"job(s) {shown} written on the master, but {replicas} replica(s) acknowledged "
            "them in time: a failover now could lose them (enqueue again with the same job "
            "ids to retry)"
        )


class Retry(Exception):
    """Raise inside a task to run it again after ``delay`` seconds.

    The attempt counts (``current_job().attempt`` grows by one) but is not limited by the
    task's ``retries``: the task's own code decides when to stop asking.
    """

    def __init__(self, delay: float | timedelta = 0.0) -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if seconds < 0:
            raise ValueError(f"Retry(delay={delay!r}): the delay must not be negative")
        super().__init__(f"retry requested in {seconds:g}s")
        self.delay = seconds
