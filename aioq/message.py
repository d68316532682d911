"""Encoding jobs for Redis and validating what comes back.

A job record is a Redis hash (key layout in ``keys.py``) with these fields::

    task         registered task name
    queue        queue name
    args         JSON array of positional arguments
    kwargs       JSON object of keyword arguments
    status       a ``JobStatus`` value
    attempts     attempts started so far (aioq's own counter; survives Redis restarts)
    deliveries   deliveries of the current attempt that did not finish (poison detection)
    retries      extra attempts allowed after a failure
    timeout      seconds one attempt may run ("" = no limit)
    priority     1-9 (absent: 0, the default): which of the queue's streams it waits in
    enqueued_at, started_at, finished_at    epoch milliseconds, Redis server time
    worker       consumer name of the worker that started the last attempt
    result       JSON of the return value (succeeded)
    error, exc_type, traceback              the failure the job ended with (absent unless it
                 failed for good: a failure that is retried moves to ``history``)
    wait         why a scheduled job waits: "delay" (enqueued with delay/eta), "retry" (a
                 retry's backoff), "rate limit" (its task's limit turned it away), "key rate
                 limit" (its key's) or "debounce" (gathering enqueues of its key,
                 ``dedup.py``); its due time is its score in the queue's scheduled set (a
                 queued job waiting for a place on its key has none: it is in its key's list,
                 keyed.lua)
    for          the consumer name of the worker a broadcast copy is for (``broadcast.py``)
    keyed        a keyed job's limits and concurrency key: "<concurrency> <rate n> <rate
                 period ms> <key>", 0 for no such limit (``Task.key_limits``)
    history      JSON list of earlier attempts' failures, oldest first, the last 10:
                 {attempt, error, exc_type, at (epoch ms), traceback (the newest only)}
    progress     JSON value set by ``current_job().set_progress``
    progress_seq how many values it has set (published with each, see ``job.progress()``)
    trace        JSON object of the enqueuer's trace context (W3C ``traceparent``, ...), written
                 only when there was one to carry (``tracing.py``)
    then         JSON list of the workflow steps to tell when the job finishes (``canvas.py``),
                 or the "unlock" of a ``unique_for`` job's key (``dedup.py``)
    flow         "<queue> <id>" of the workflow the job is a step of (its record: ``keys.flow``)
    input        JSON value the step gets as its first argument from its predecessor (its
                 result, a chord's list of results, or a failed job's id for ``on_failure``)
    cause        JSON of the failure upstream that cancelled a step (``handover.lua``)
    hold_delay, hold_eta, hold_expires     a held step's delay, eta and expiry, applied when
                 it starts (``flow.lua``); wait is "workflow" while it is held
    sig          hex HMAC-SHA256 of the job's identity, call and options, written only by an
                 app with a ``signing_key`` (``signing.py``)

Everything is JSON through orjson; nothing is pickled.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson


def encode_call(task: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bytes, bytes]:
    """JSON-encode a call's arguments, or raise ``TypeError`` naming the task and argument.

    Only values that come back from JSON unchanged are accepted (str, int, finite float, bool,
    None, and lists, tuples and str-keyed dicts of them): orjson would turn a ``datetime``,
    ``UUID``, enum or dataclass into a string or dict and ``nan`` into ``null``, and the task
    would get something else than it was called with.
    """
    for i, value in enumerate(args):
        if not _plain(value):
            _reject(task, f"positional argument {i}", value)
    for name, value in kwargs.items():
        if not _plain(value):
            _reject(task, f"argument {name!r}", value)
    return orjson.dumps(args), orjson.dumps(kwargs)


def _plain(value: Any) -> bool:
    """Whether ``value`` round-trips through JSON unchanged (exact types: no subclasses)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list or kind is tuple:
        return all(_plain(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


def _offender(value: Any, path: str = "") -> tuple[str, Any]:
    """Where in ``value`` the first value that does not round-trip is, and that value."""
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            if not _plain(v):
                return _offender(v, f"{path}[{i}]")
    elif type(value) is dict:
        for k, v in value.items():
            if type(k) is not str:
                return f"{path} (key {k!r})", k
            if not _plain(v):
                return _offender(v, f"{path}[{k!r}]")
    return path, value


def _reject(task: str, where: str, value: Any) -> None:
    path, bad = _offender(value)
    at = f" at {path}" if path else ""
    if type(bad) is float:
        what = f"{bad!r}, which JSON cannot carry (it would arrive as None)"
    else:
        kind = type(bad).__qualname__
        if type(bad).__module__ != "builtins":
            kind = f"{type(bad).__module__}.{kind}"
        what = f"of type {kind}, which does not come back from JSON as itself"
    raise TypeError(
        f"{where} of task {task!r}{at} is {what}; aioq sends arguments as JSON (str, int, "
        "float, bool, None, lists and str-keyed dicts): convert it, e.g. str() or "
        ".isoformat(), and back in the task"
    )


def encode_result(task: str, value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise TypeError(
            f"the return value of task {task!r} is not JSON-serialisable "
            f"({type(value).__name__}: {exc})"
        ) from None


def job_fields(
    task: str,
    queue: str,
    args: bytes,
    kwargs: bytes,
    retries: int,
    timeout: float | None,
    priority: int = 0,
    trace: bytes = b"",
) -> list[Any]:
    """The values the enqueue script (``scripts/enqueue.py``) writes, in its order: task, queue,
    args, kwargs, retries, timeout, priority, trace (it adds status, attempts and the
    enqueue time itself). ``trace`` stays empty (nothing written) unless ``tracing.publish``
    fills it in (at ``tracing.TRACE``). ``Call.prepare`` puts the workflow's values and the
    signature (``signing.py``) after them."""
    return [task, queue, args, kwargs, int(retries), timeout_text(timeout), priority, trace]


def timeout_text(timeout: float | None) -> str:
    """The ``timeout`` field as written ("" = no limit): what a job's signature covers."""
    return "" if timeout is None else repr(float(timeout))


class Delivery:
    """One started job as the fetch/start/reclaim scripts (``scripts/worker.py``) return it,
    validated."""

    __slots__ = (
        "args",
        "attempt",
        "entry_id",
        "job_id",
        "kwargs",
        "retries",
        "sig",
        "task",
        "timeout",
        "trace",
    )  # fmt: skip

    entry_id: bytes
    job_id: str
    attempt: int
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    timeout: float | None
    retries: int
    trace: bytes | None  # the raw ``trace`` field: decoded only by a worker that traces
    sig: bytes | None  # the raw ``sig`` field: checked by a worker with a signing key


def parse_delivery(row: list[Any]) -> tuple[Delivery, str | None]:
    """Decode one started job; the second value names the problem when it is not runnable.

    Whatever another program wrote into the record, this never raises: a bad record becomes
    a problem string and the job is failed with it and kept in the dead-letter stream.
    """
    d = Delivery()
    d.entry_id = row[0]
    d.job_id = row[1].decode("utf-8", "replace")
    d.attempt = int(row[2])
    d.task = ""
    d.args = []
    d.kwargs = {}
    d.timeout = None
    d.retries = 0
    d.trace = row[9]
    task, args, kwargs, timeout, retries = row[3:8]
    piped = row[10] if len(row) > 10 else None
    d.sig = row[11] if len(row) > 11 else None
    if "\ufffd" in d.job_id and d.job_id.encode() != row[1]:
        # the decoded id would name another record: the caller must use the raw id (row[1])
        return d, f"job id {row[1]!r} is not UTF-8"
    if task is None:
        return d, "job record has no 'task' field"
    try:
        d.task = task.decode()
    except UnicodeDecodeError:
        return d, f"job record's task name {task!r} is not UTF-8"
    try:
        a = orjson.loads(args) if args is not None else []
        k = orjson.loads(kwargs) if kwargs is not None else {}
    except orjson.JSONDecodeError as exc:
        return d, f"job record of task {d.task!r} holds arguments that are not JSON: {exc}"
    if not isinstance(a, list):
        return d, f"job 'args' must be a JSON array, got {type(a).__name__}"
    if not isinstance(k, dict):
        return d, f"job 'kwargs' must be a JSON object, got {type(k).__name__}"
    if piped is not None:  # a workflow step: its predecessor's value comes first
        try:
            a = [orjson.loads(piped), *a]
        except orjson.JSONDecodeError as exc:
            return d, f"job record of task {d.task!r} holds an input that is not JSON: {exc}"
    d.args, d.kwargs = a, k
    try:
        d.timeout = float(timeout) if timeout else None
        d.retries = int(retries) if retries else 0
    except ValueError:
        return d, f"job 'timeout'/'retries' are not numbers: {timeout!r}, {retries!r}"
    return d, None


# -- decoding job records ------------------------------------------------------------------
# What a record's fields hold when read back for a view (``views.py``). Another program may
# have written the record, so none of these raises: a missing or garbage field reads as
# empty.


def text_field(value: bytes | None) -> str | None:
    """A text field; ``None`` when missing or empty (bytes that are not UTF-8 are replaced)."""
    return value.decode(errors="replace") if value else None


def key_of(value: bytes | None) -> str | None:
    """The concurrency key in a ``keyed`` field ("<c> <n> <p> <key>"); ``None`` for none."""
    parts = value.split(b" ", 3) if value else []
    return parts[3].decode(errors="replace") if len(parts) == 4 else None


def key_member(keyed: bytes | None, priority: int, job_id: str) -> str | None:
    """A keyed job's entry in its key's lists, "<priority>:<places>:<job id>"
    (``scripts/helpers.lua``), from its ``keyed`` field; ``None`` for a job without a key."""
    parts = keyed.split(b" ", 3) if keyed else []
    if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
        return None
    concurrency, n = int(parts[0]), int(parts[1])
    return f"{priority}:{concurrency or n or 1}:{job_id}"


def member_job(member: bytes) -> str:
    """The job id of an entry of a key's lists ("<priority>:<places>:<job id>")."""
    parts = member.split(b":", 2)
    return (parts[2] if len(parts) == 3 else member).decode(errors="replace")


def int_field(value: bytes | None) -> int:
    """A number field; 0 when missing or not a number."""
    try:
        return int(value or 0)
    except ValueError:
        return 0


def time_field(value: bytes | None) -> datetime | None:
    """An epoch-milliseconds field (Redis server time) as a UTC datetime."""
    ms = int_field(value)
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


def json_field(value: bytes | None) -> Any:
    """A JSON field; ``None`` when missing or not JSON. Lua's cjson passes bytes that are not
    UTF-8 through as they are, so those are replaced and tried again."""
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        try:
            return orjson.loads(value.decode(errors="replace"))
        except orjson.JSONDecodeError:
            return None


def flat_pairs(value: Any) -> Any:
    """A flat ``[name, value, ...]`` list of strings as a dict (cjson writes Redis replies,
    such as a stream entry's fields or an HGETALL, that way); anything else as it is."""
    if isinstance(value, list) and len(value) % 2 == 0 and all(isinstance(v, str) for v in value):
        return dict(zip(value[::2], value[1::2], strict=True))
    return value


def history_field(value: bytes | None) -> list[dict[str, Any]]:
    """The ``history`` field: earlier attempts' failures, oldest first, each a dict of
    ``attempt`` (int), ``error``, ``exc_type``, ``traceback`` (str or ``None``; only the newest
    entry keeps its traceback) and ``at`` (UTC datetime or ``None``). Garbage reads as no
    history, an entry that is not an object is left out."""
    entries = json_field(value)
    out: list[dict[str, Any]] = []
    for e in entries if isinstance(entries, list) else ():
        if not isinstance(e, dict):
            continue
        attempt, at = e.get("attempt"), e.get("at")
        out.append(
            {
                "attempt": attempt if isinstance(attempt, int) else _number(attempt),
                "error": _str_or_none(e.get("error")),
                "exc_type": _str_or_none(e.get("exc_type")),
                "traceback": _str_or_none(e.get("traceback")),
                "at": _epoch_ms(at),
            }
        )
    return out


def _epoch_ms(value: Any) -> datetime | None:
    if not isinstance(value, int | float) or value <= 0:
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def _number(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
