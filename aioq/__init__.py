"""aioq: an asyncio-native task queue on Redis streams."""

import logging

from .app import App
from .broadcast import BroadcastJob, BroadcastTask
from .canvas import Chain, Chord, Group, chain, chord, group
from .context import JobContext, current_job
from .errors import (
    AioqError,
    JobCancelled,
    JobNotFound,
    NoLiveWorkers,
    NotDurable,
    PermissionDenied,
    QueueFull,
    RedisUnavailable,
    Retry,
    TaskFailed,
)
from .group_job import GroupJob
from .job import Job, JobInfo, JobStatus
from .sync import SyncJob
from .task import Call, Task, TaskOptions
from .worker import Worker

__version__ = "0.1.0"

logging.getLogger("aioq").addHandler(logging.NullHandler())

__all__ = [
    "AioqError",
    "App",
    "BroadcastJob",
    "BroadcastTask",
    "Call",
    "Chain",
    "Chord",
    "Group",
    "GroupJob",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobInfo",
    "JobNotFound",
    "JobStatus",
    "NoLiveWorkers",
    "NotDurable",
    "PermissionDenied",
    "QueueFull",
    "RedisUnavailable",
    "Retry",
    "SyncJob",
    "Task",
    "TaskFailed",
    "TaskOptions",
    "Worker",
    "chain",
    "chord",
    "current_job",
    "group",
]
