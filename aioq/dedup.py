"""Deduplication and debounce: what ``options(unique_for=..., debounce=..., unique_key=...)``
asks of the enqueue script (``scripts/dedup.lua`` does the rest, atomically).

* ``unique_for=seconds``: while a job of the task with the same key is queued, scheduled or
  running, or finished (any final status) less than ``seconds`` ago, enqueueing returns that
  job and writes nothing. ``unique_for=0`` holds the key until the job finishes.
* ``debounce=seconds``: one job per key waits, with the latest enqueue's arguments, and
  becomes due ``seconds`` after the latest enqueue. Once it is due (moved to its stream) the
  next enqueue starts a new one.

The key is ``unique_key`` when given, else a hash of the call's arguments bound to the task's
signature (so ``add(1, 2)``, ``add(1, y=2)`` and ``add(x=1, y=2)`` are one key). Keys are per
task and per queue: the lock lives beside the queue's jobs.
"""

from __future__ import annotations

import hashlib
import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .task import Options, Task

MAX_UNIQUE_KEY = 256

NO_DEDUP = ""
"""The enqueue script's dedup value of a job that asks for none."""


def seconds(task: str, name: str, value: object, minimum: float, strict: bool) -> float:
    """A number of seconds (or a timedelta) for option ``name``: finite, >= ``minimum`` (>
    when ``strict``); a ``ValueError``/``TypeError`` naming the task, option and value."""
    if isinstance(value, timedelta):
        out = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out = float(value)
    else:
        raise TypeError(f"task {task!r}: {name} must be seconds (a number), got {value!r}")
    if not math.isfinite(out) or out < minimum or (strict and out == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"task {task!r}: {name} must be {bound} seconds, got {value!r}")
    return out


def check(
    task: str,
    unique_for: object,
    debounce: object,
    unique_key: object,
    delay: float,
    has_eta: bool,
    job_id: str | None,
) -> tuple[float | None, float | None, str | None]:
    """``unique_for``, ``debounce`` and ``unique_key`` checked (in seconds), or an error
    naming what is wrong; nothing is sent before this passes."""
    u = None if unique_for is None else seconds(task, "unique_for", unique_for, 0.0, False)
    d = None if debounce is None else seconds(task, "debounce", debounce, 0.0, True)
    if u is not None and d is not None:
        raise ValueError(
            f"task {task!r}: give unique_for= or debounce=, not both (unique_for keeps the "
            "first job, debounce the latest)"
        )
    if unique_key is not None:
        if u is None and d is None:
            raise ValueError(f"task {task!r}: unique_key= needs unique_for= or debounce=")
        if not isinstance(unique_key, str) or not unique_key:
            raise TypeError(
                f"task {task!r}: unique_key must be a non-empty str, got {unique_key!r}"
            )
        if len(unique_key) > MAX_UNIQUE_KEY:
            raise ValueError(
                f"task {task!r}: unique_key is longer than {MAX_UNIQUE_KEY} characters"
            )
    if d is not None and (delay or has_eta):
        raise ValueError(
            f"task {task!r}: debounce= sets when the job is due; it cannot go with delay= or eta="
        )
    if d is not None and job_id is not None:
        raise ValueError(
            f"task {task!r}: debounce= picks the job to update itself; it cannot go with job_id="
        )
    return u, d, unique_key


def values(
    task: Task[Any, Any], opts: Options, queue: str, args: tuple[Any, ...], kw: dict[str, Any]
) -> tuple[str, bytes, int]:
    """The enqueue script's dedup value for one call ("<mode> <window ms> <task>:<key>",
    ``scripts/dedup.lua``), its ``then`` (the unlock a ``unique_for`` job hands over when it
    finishes; empty for others) and its delay in ms (a debounced job's window; else 0)."""
    lock = f"{task.name}:{opts.unique_key or call_key(task, args, kw)}"
    if opts.unique_for is not None:
        ms = round(opts.unique_for * 1000)
        then = orjson.dumps([{"k": "unlock", "q": queue, "id": lock, "i": ms}])
        return f"unique {ms} {lock}", then, 0
    assert opts.debounce is not None
    ms = max(1, round(opts.debounce * 1000))
    return f"debounce {ms} {lock}", b"", ms


def call_key(task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The default key: a hash of the arguments as the task's signature binds them (defaults
    filled in), so the same call spelled positionally or by keyword is one key."""
    try:
        bound = task._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        data: Any = bound.arguments
    except TypeError:  # checked before: only a signature that cannot bind at all
        data = [args, kwargs]
    # repr: a default value JSON cannot carry still keys consistently
    encoded = orjson.dumps(data, default=repr, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha1(encoded).hexdigest()
