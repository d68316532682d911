"""aioq: an asyncio-native task queue on Redis streams."""

import logging

from .app import App
from .context import JobContext, current_job
from .errors import (
    AioqError,
    JobCancelled,
    JobNotFound,
    PermissionDenied,
    RedisUnavailable,
    Retry,
    TaskFailed,
)
from .job import Job, JobInfo, JobStatus
from .sync import SyncJob
from .task import Call, Task, TaskOptions
from .worker import Worker

__version__ = "0.1.0"

logging.getLogger("aioq").addHandler(logging.NullHandler())

__all__ = [
    "AioqError",
    "App",
    "Call",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobInfo",
    "JobNotFound",
    "JobStatus",
    "PermissionDenied",
    "RedisUnavailable",
    "Retry",
    "SyncJob",
    "Task",
    "TaskFailed",
    "TaskOptions",
    "Worker",
    "current_job",
]
