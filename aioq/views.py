"""Read-only views of an app's queues, workers, jobs and dead letters, for the CLI, the
dashboard and your own tooling. Nothing here writes to Redis (the actions are in ``ops.py``);
job records are decoded by ``message.py``.

Listings read indexes, not the keyspace: queued jobs are the stream entries after the consumer
group's last-delivered id, running ones its pending-entries list, scheduled ones the scheduled
set, failed ones the failed-jobs index, recently finished ones the ``recent`` stream; only
then are those jobs' records read (HMGET), at most ``limit`` of them per index and queue
unless a ``task`` filter skips some. Only listings of other statuses (succeeded, cancelled,
expired, or no status) SCAN the job records (``list_jobs``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Collection
from contextlib import aclosing
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.exceptions import ResponseError

from .app import App
from .cluster import scan
from .errors import JobNotFound
from .job import KEY_LIMIT, JobInfo, JobStatus
from .keys import (
    GROUP,
    PRIORITIES,
    THROUGHPUT_BUCKET,
    THROUGHPUT_WINDOW,
    QueueKeys,
    split_group,
    throughput_key,
    workers_key,
)
from .message import (
    flat_pairs,
    history_field,
    int_field,
    json_field,
    key_of,
    member_job,
    text_field,
    time_field,
)
from .ratelimit import RateLimit


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts of one queue: ``queued`` waiting in the stream, ``running`` delivered and not
    finished, ``scheduled`` waiting for their time, ``failed`` finished failed (records not
    yet expired), ``dead`` in the dead-letter stream; ``paused`` by ``aioq pause``;
    ``by_priority``: of the queued, how many wait at each priority that has any;
    ``keys_waiting``: how many concurrency keys are at their limit with jobs waiting for a
    place (those jobs are in none of the counts: ``key_stats`` counts them, key by key)."""

    queue: str
    queued: int
    running: int
    scheduled: int
    failed: int
    dead: int
    paused: bool
    by_priority: dict[int, int] = field(default_factory=dict)
    keys_waiting: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def queue_stats(app: App, queues: list[str] | None = None) -> list[QueueStats]:
    names = queues or app.queues
    redis = app.redis
    # failures older than the result TTL have expired records (the index trims them lazily)
    since = (time.time() - app.result_ttl) * 1000 if app.result_ttl > 0 else "-inf"
    per_queue = 5 + 2 * PRIORITIES
    async with redis.pipeline(transaction=False) as pipe:
        for q in names:
            k = app.keys(q)
            pipe.zcard(k.scheduled)
            pipe.xlen(k.dead)
            pipe.zcount(k.failed, since, "+inf")
            pipe.exists(k.paused)
            pipe.zcard(k.keyed)
            for level in k.levels:  # one stream per priority
                pipe.xlen(level.stream)
                pipe.xinfo_groups(level.stream)
        replies = await pipe.execute(raise_on_error=False)
    out = []
    for i, q in enumerate(names):
        counts = replies[per_queue * i : per_queue * (i + 1)]
        scheduled, dead, failed, paused, keyed = counts[:5]
        if isinstance(scheduled, Exception):
            raise scheduled
        queued = running = 0
        by_priority: dict[int, int] = {}
        for priority in range(PRIORITIES):
            length, groups = counts[5 + 2 * priority : 7 + 2 * priority]
            if isinstance(length, Exception):
                raise length
            level_queued, level_running = _level_counts(int(length), groups)
            queued += level_queued
            running += level_running
            if level_queued:
                by_priority[priority] = level_queued
        out.append(
            QueueStats(
                q, queued, running, int(scheduled), int(failed), int(dead), bool(paused),
                by_priority, int(keyed),
            )
        )  # fmt: skip
    return out


def _level_counts(length: int, groups: list[dict[str, Any]] | Exception) -> tuple[int, int]:
    """(queued, running) of one stream from its length and XINFO GROUPS."""
    if isinstance(groups, ResponseError):  # no stream yet
        return length, 0
    if isinstance(groups, Exception):
        raise groups
    for g in groups:
        if g.get("name") in (GROUP, GROUP.encode()):
            running = int(g.get("pending") or 0)
            lag = g.get("lag")
            return (int(lag) if lag is not None else max(0, length - running)), running
    return length, 0


# -- workers ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker as its last heartbeat described it (``worker/heartbeat.py``).

    ``uptime`` and ``last_beat`` are seconds as of the read; ``started_at`` is the worker's
    own clock (epoch seconds). A worker process of ``aioq worker --processes N`` has the pid
    of its ``supervisor`` and its ``process`` number (1..N); other workers have None.
    """

    consumer: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    running: int
    done: int
    started_at: float
    uptime: float
    last_beat: float
    supervisor: int | None = None
    process: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def worker_stats(app: App) -> list[WorkerInfo]:
    """The app's live workers, by host, then pid (the processes of one supervisor together,
    in their order). Entries whose worker has not beaten for ``STALE_AFTER`` seconds (it died
    without a clean stop) are left out (``ops.prune_workers`` deletes them)."""
    live, _ = await _heartbeats(app)
    return live


async def stale_workers(app: App) -> list[bytes]:
    """The heartbeat entries (raw field names of the workers hash) of workers that are dead:
    silent for ``STALE_AFTER`` seconds, or not a heartbeat at all."""
    _, stale = await _heartbeats(app)
    return stale


async def _heartbeats(app: App) -> tuple[list[WorkerInfo], list[bytes]]:
    from .worker.heartbeat import STALE_AFTER

    async with app.redis.pipeline(transaction=False) as pipe:
        _time_at(pipe, workers_key(app.name))
        pipe.hgetall(workers_key(app.name))
        (secs, micros), raw = await pipe.execute()
    now_ms = int(secs) * 1000 + int(micros) // 1000
    live: list[WorkerInfo] = []
    stale: list[bytes] = []
    for consumer, data in raw.items():
        try:
            s = orjson.loads(data)
            ago = max(0.0, (now_ms - int(s["beat"])) / 1000)
            info = WorkerInfo(
                consumer=consumer.decode(errors="replace"),
                host=str(s.get("host", "")),
                pid=int(s.get("pid", 0)),
                queues=[str(q) for q in s.get("queues", [])],
                concurrency=int(s.get("concurrency", 0)),
                running=int(s.get("running", 0)),
                done=int(s.get("done", 0)),
                started_at=float(s.get("started_at", 0.0)),
                uptime=float(s.get("uptime", 0.0)) + ago,
                last_beat=ago,
                supervisor=_int_or_none(s.get("supervisor")),
                process=_int_or_none(s.get("process")),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            stale.append(consumer)  # not a heartbeat: nothing will ever refresh it
            continue
        if ago > STALE_AFTER:
            stale.append(consumer)
        else:
            live.append(info)
    # the processes of one supervisor side by side, in their order
    return sorted(live, key=lambda w: (w.host, w.supervisor or w.pid, w.process or 0)), stale


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _time_at(pipe: Any, key: str) -> None:
    """Queue a read of Redis' clock on the server holding ``key`` (in a cluster, the node the
    scripts writing it stamp their times with); replies [seconds, microseconds]."""
    pipe.eval("return redis.call('TIME')", 1, key)


async def throughput(app: App) -> list[dict[str, float]]:
    """Jobs the app's workers finished, per ``THROUGHPUT_BUCKET`` (10 s) bucket of the last
    ``THROUGHPUT_WINDOW`` (10 minutes), oldest first, from the hash their heartbeats write
    (keys.py; buckets no beat wrote are zeros): ``t`` the bucket's start (epoch s, Redis'
    clock), ``seconds`` how much of it has passed (all of it but for the current one),
    ``jobs``, and ``rate`` in jobs/s. Jobs count in the bucket of the beat that reported
    them, so the current bucket's rate is over at least a heartbeat interval: its first beats
    report jobs finished up to 2 s before it began, which over its first 0.1 s would be a spike."""
    from .worker.heartbeat import HEARTBEAT

    async with app.redis.pipeline(transaction=False) as pipe:
        _time_at(pipe, throughput_key(app.name))
        pipe.hgetall(throughput_key(app.name))
        (secs, micros), raw = await pipe.execute()
    secs, micros = int(secs), int(micros)
    counts: dict[int, int] = {}
    for start, jobs in raw.items():
        if start.isdigit() and jobs.lstrip(b"-").isdigit():
            counts[int(start)] = int(jobs)
    now, current = secs + micros / 1e6, secs - secs % THROUGHPUT_BUCKET
    first = current - THROUGHPUT_WINDOW + THROUGHPUT_BUCKET  # the oldest bucket the Lua keeps
    points: list[dict[str, float]] = []
    for t in range(first, current + 1, THROUGHPUT_BUCKET):
        seconds, jobs = min(float(THROUGHPUT_BUCKET), now - t), counts.get(t, 0)
        points.append(
            {"t": t, "seconds": seconds, "jobs": jobs, "rate": jobs / max(seconds, HEARTBEAT)}
        )
    return points


def throughput_over(points: list[dict[str, float]], seconds: float = 60.0) -> dict[str, float]:
    """The newest of ``points`` (``throughput``) that cover ``seconds`` (whole buckets: up to
    a bucket more) summed: ``jobs``, the ``seconds`` they cover, and ``rate`` in jobs/s."""
    jobs, covered = 0, 0.0
    for p in reversed(points):
        if covered >= seconds:
            break
        jobs, covered = jobs + int(p["jobs"]), covered + p["seconds"]
    return {"jobs": jobs, "seconds": covered, "rate": jobs / covered if covered else 0.0}


# -- jobs -------------------------------------------------------------------------------------

_SUMMARY_FIELDS = (
    "status", "task", "queue", "attempts", "enqueued_at", "started_at", "finished_at",
    "error", "exc_type", "worker", "progress", "priority", "history", "wait", "keyed",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One row of a job listing (``Job.info()`` has the whole record)."""

    id: str
    queue: str
    task: str
    status: str
    attempts: int
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    exc_type: str | None
    worker: str | None
    progress: Any = None  # the last ``set_progress`` value (JSON), if any
    priority: int = 0
    #: earlier attempts' failures as ``JobInfo.history``, without tracebacks (``info()``)
    history: list[dict[str, Any]] = field(default_factory=list)
    #: as ``JobInfo``: a scheduled job's due time and why it waits ("delay", "retry",
    #: "rate limit", "key rate limit", "debounce"), or "key limit" for a queued job waiting
    #: for a place on its key; ``None`` for other jobs (``list_jobs`` reads the due times)
    due_at: datetime | None = None
    wait_reason: str | None = None
    #: a succeeded job's return value, read by ``recent_jobs`` only (other listings and
    #: results over ``RESULT_PREVIEW_MAX`` bytes: None, with ``result_size`` saying how big)
    result: Any = None
    result_size: int = 0
    #: the job's concurrency key, ``None`` for a job without one
    concurrency_key: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("enqueued_at", "started_at", "finished_at", "due_at"):
            d[name] = d[name].isoformat() if d[name] is not None else None
        d["history"] = [{**h, "at": _iso(h["at"])} for h in self.history]
        return d


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def info_dict(info: JobInfo) -> dict[str, Any]:
    """``info`` (``Job.info()``) as JSON-ready values: times as ISO 8601 strings."""
    d: dict[str, Any] = {name: getattr(info, name) for name in JobInfo.__dataclass_fields__}
    d["status"] = info.status.value
    for name in ("enqueued_at", "started_at", "finished_at", "due_at"):
        d[name] = _iso(d[name])
    d["history"] = [{**h, "at": _iso(h["at"])} for h in info.history]
    return d


def _summary(job_id: str, queue: str, values: list[bytes | None]) -> JobSummary:
    v = dict(zip(_SUMMARY_FIELDS, values, strict=True))
    status = text_field(v["status"]) or ""
    return JobSummary(
        id=job_id,
        queue=text_field(v["queue"]) or queue,
        task=text_field(v["task"]) or "",
        status=status,
        attempts=int_field(v["attempts"]),
        enqueued_at=time_field(v["enqueued_at"]),
        started_at=time_field(v["started_at"]),
        finished_at=time_field(v["finished_at"]),
        error=text_field(v["error"]),
        exc_type=text_field(v["exc_type"]),
        worker=text_field(v["worker"]),
        progress=json_field(v["progress"]),
        priority=int_field(v["priority"]),
        history=[
            {k: x for k, x in h.items() if k != "traceback"} for h in history_field(v["history"])
        ],
        wait_reason=text_field(v["wait"]) if status == JobStatus.SCHEDULED.value else None,
        concurrency_key=key_of(v["keyed"]),
    )


async def _with_due_times(app: App, rows: list[JobSummary]) -> list[JobSummary]:
    """``rows`` with the due time of each scheduled one (its score in the scheduled set),
    read in one round trip."""
    waiting = [i for i, r in enumerate(rows) if r.status == JobStatus.SCHEDULED.value]
    if not waiting:
        return rows
    async with app.redis.pipeline(transaction=False) as pipe:
        for i in waiting:
            pipe.zscore(app.keys(rows[i].queue).scheduled, rows[i].id)
        scores = await pipe.execute()
    out = list(rows)
    for i, score in zip(waiting, scores, strict=True):
        if score:
            out[i] = replace(rows[i], due_at=datetime.fromtimestamp(score / 1000, tz=UTC))
    return out


async def list_jobs(
    app: App,
    *,
    status: JobStatus | Collection[JobStatus] | None = None,
    task: str | None = None,
    queues: list[str] | None = None,
    limit: int = 50,
) -> list[JobSummary]:
    """Up to ``limit`` jobs of the given queues (default: all), newest first; ``status`` is
    one status or several (jobs in any of them).

    Queued, scheduled and running jobs (any of those statuses and no other) come from the
    queues' indexes: queued ones are the next to start (the stream entries after the consumer
    group's last-delivered id, highest priority first), running ones the pending-entries
    list, scheduled ones the soonest due. Failed jobs alone come from the failed-jobs index,
    newest failure first. Any other listing SCANs the queues' job keys (cost grows with the
    number of records kept, i.e. with ``result_ttl``) and stops once ``limit`` jobs match.
    """
    wanted: set[str] | None = None
    if status is not None:
        wanted = {status.value} if isinstance(status, JobStatus) else {s.value for s in status}
        if not wanted:
            return []
    failed = wanted == {JobStatus.FAILED.value}
    indexed = wanted is not None and wanted <= _INDEXED
    names = queues or app.queues
    rows: list[JobSummary] = []
    for q in names:
        want = limit - len(rows) if not (failed or indexed) else limit
        if want <= 0:
            break
        if failed:
            rows += await _failed_jobs(app, q, task, want)
        elif wanted is not None and indexed:
            rows += await _indexed_jobs(app, q, wanted, task, want)
        else:
            rows += await _scanned_jobs(app, q, wanted, task, want)
    if failed:
        rows.sort(key=lambda r: r.finished_at or _EPOCH, reverse=True)
    else:
        rows.sort(key=lambda r: r.enqueued_at or _EPOCH, reverse=True)
    return await _with_due_times(app, rows[:limit])


_INDEXED = {s.value for s in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RUNNING)}


async def _indexed_jobs(
    app: App, queue: str, statuses: set[str], task: str | None, limit: int
) -> list[JobSummary]:
    """Up to ``limit`` jobs of one queue in ``statuses`` (a subset of ``_INDEXED``), read
    from the indexes of those statuses."""
    keys = app.keys(queue)
    # a task filter may skip most of a page: read more per round trip then
    page = limit if task is None else max(limit, 100)
    levels = await _level_groups(app, keys) if statuses - {JobStatus.SCHEDULED.value} else []
    # each source with the wait_reason of the queued jobs it finds (those waiting for a place
    # on their key are only known as such by the list they wait in: keyed.lua)
    sources: list[tuple[AsyncGenerator[list[str]], str | None]] = []
    if JobStatus.RUNNING.value in statuses:
        sources.append((_running_ids(app, levels, page), None))
    if JobStatus.QUEUED.value in statuses:
        sources.append((_queued_ids(app, levels, page), None))
        sources.append((_key_waiting_ids(app, keys, page), KEY_LIMIT))
    if JobStatus.SCHEDULED.value in statuses:
        sources.append((_scheduled_ids(app, keys, page), None))
    rows: list[JobSummary] = []
    seen: set[str] = set()  # a job moving between indexes meanwhile may be read twice
    for source, reason in sources:
        async with aclosing(source) as pages:
            found = 0
            async for ids in pages:
                for row in await _summaries(app, keys, queue, ids):
                    if (
                        row.id not in seen
                        and row.status in statuses
                        and (task is None or row.task == task)
                    ):
                        seen.add(row.id)
                        if reason is not None and row.status == JobStatus.QUEUED.value:
                            row = replace(row, wait_reason=reason)
                        rows.append(row)
                        found += 1
                if found >= limit:
                    break
    return rows


_Entries = list[tuple[bytes, dict[bytes, bytes]]]  # stream entries as XRANGE returns them


@dataclass(frozen=True, slots=True)
class _Level:
    """One priority's stream of a queue as its consumer group sees it."""

    keys: QueueKeys
    last_delivered: bytes  # entries after this one are queued
    pending: int  # delivered, not yet acknowledged: running


async def _level_groups(app: App, keys: QueueKeys) -> list[_Level]:
    """The queue's levels that have a stream, highest priority first."""
    async with app.redis.pipeline(transaction=False) as pipe:
        for level in keys.levels:
            pipe.xinfo_groups(level.stream)
        replies = await pipe.execute(raise_on_error=False)
    out = []
    for level, groups in zip(keys.levels, replies, strict=True):
        if isinstance(groups, ResponseError):  # no stream yet
            continue
        if isinstance(groups, Exception):
            raise groups
        group = next((g for g in groups if g.get("name") in (GROUP, GROUP.encode())), None)
        if group is None:  # no worker has read it yet: every entry is queued
            out.append(_Level(level, b"0-0", 0))
            continue
        last = group.get("last-delivered-id") or b"0-0"
        last = last if isinstance(last, bytes) else str(last).encode()
        out.append(_Level(level, last, int(group.get("pending") or 0)))
    return out[::-1]


async def _queued_ids(app: App, levels: list[_Level], page: int) -> AsyncGenerator[list[str]]:
    """Pages of the job ids waiting in the streams, the next to start first."""
    for level in levels:
        start = b"(" + level.last_delivered
        while True:
            entries: _Entries = await app.redis.xrange(level.keys.stream, start, "+", count=page)  # type: ignore[assignment]
            if not entries:
                break
            yield _entry_job_ids(entries)
            if len(entries) < page:
                break
            start = b"(" + entries[-1][0]


async def _key_waiting_ids(app: App, keys: QueueKeys, page: int) -> AsyncGenerator[list[str]]:
    """Pages of the job ids waiting for a place on their concurrency key, key by key (of the
    first KEY_SCAN keys at their limit), each key's next to start first."""
    groups: list[bytes] = await app.redis.zrange(keys.keyed, 0, KEY_SCAN - 1)  # type: ignore[assignment]
    for group in groups:
        start = 0
        while True:
            ids: list[bytes] = await app.redis.lrange(keys.keywait(group), start, start + page - 1)  # type: ignore[assignment]
            if not ids:
                break
            yield [member_job(m) for m in ids]
            if len(ids) < page:
                break
            start += page


async def _running_ids(app: App, levels: list[_Level], page: int) -> AsyncGenerator[list[str]]:
    """Pages of the job ids in the pending-entries lists (delivered to a worker, not yet
    finished), the longest running first."""
    redis = app.redis
    for level in levels:
        if not level.pending:
            continue
        start: bytes | str = "-"
        while True:
            pending: list[dict[str, Any]] = await redis.xpending_range(
                level.keys.stream, GROUP, start, "+", page
            )
            if not pending:
                break
            async with redis.pipeline(transaction=False) as pipe:
                for p in pending:  # the entry holds the job id (entries deleted: no job)
                    pipe.xrange(level.keys.stream, p["message_id"], p["message_id"])
                entries = [e for found in await pipe.execute() for e in found]
            yield _entry_job_ids(entries)
            if len(pending) < page:
                break
            start = b"(" + pending[-1]["message_id"]


async def _scheduled_ids(app: App, keys: QueueKeys, page: int) -> AsyncGenerator[list[str]]:
    """Pages of the job ids in the scheduled set, the soonest due first."""
    offset = 0
    while True:
        ids: list[bytes] = await app.redis.zrange(keys.scheduled, offset, offset + page - 1)  # type: ignore[assignment]
        if not ids:
            break
        yield [jid.decode(errors="replace") for jid in ids]
        if len(ids) < page:
            break
        offset += page


def _entry_job_ids(entries: _Entries) -> list[str]:
    """The job ids of stream entries (entries that are not aioq's have none)."""
    return [jid.decode(errors="replace") for _, f in entries if (jid := f.get(b"id"))]


async def _summaries(app: App, keys: QueueKeys, queue: str, ids: list[str]) -> list[JobSummary]:
    """The records of these jobs, in order; jobs whose record is gone are left out."""
    async with app.redis.pipeline(transaction=False) as pipe:
        for jid in ids:
            pipe.hmget(keys.job(jid), _SUMMARY_FIELDS)
        records = await pipe.execute(raise_on_error=False)
    return [
        _summary(jid, queue, values)
        for jid, values in zip(ids, records, strict=True)
        if not isinstance(values, Exception) and values[0] is not None
    ]


_FINISHED = {s.value.encode() for s in JobStatus if s.finished}
RESULT_PREVIEW_MAX = 2048  # bytes of JSON: bigger results are not read for a listing


async def recent_jobs(
    app: App, queues: list[str] | None = None, limit: int = 20
) -> list[JobSummary]:
    """Up to ``limit`` jobs their workers finished last (succeeded, failed or cancelled), most
    recent first, from each queue's ``recent`` stream (keys.py): no SCAN. Jobs whose records
    have expired are left out."""
    names = queues or app.queues
    redis = app.redis
    async with redis.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.xrevrange(app.keys(q).recent, count=limit)
        batches: list[list[tuple[bytes, dict[bytes, bytes]]]] = await pipe.execute()
    wanted: dict[tuple[str, str], None] = {}  # (queue, job id), newest first, no repeats
    for q, entries in zip(names, batches, strict=True):
        n = 0
        for _, fields in entries:
            try:
                ids = orjson.loads(fields.get(b"ids", b"[]"))
            except orjson.JSONDecodeError:
                continue
            for jid in reversed(ids) if isinstance(ids, list) else ():
                if isinstance(jid, str) and n < limit and (q, jid) not in wanted:
                    wanted[q, jid] = None
                    n += 1
    async with redis.pipeline(transaction=False) as pipe:
        for q, jid in wanted:
            pipe.hmget(app.keys(q).job(jid), _SUMMARY_FIELDS)
            pipe.hstrlen(app.keys(q).job(jid), "result")
        replies = await pipe.execute()
    rows = [
        replace(_summary(jid, q, values), result_size=int(size))
        for (q, jid), values, size in zip(wanted, replies[::2], replies[1::2], strict=True)
        if values[0] in _FINISHED  # not since retried (or expired)
    ]
    rows.sort(key=lambda r: r.finished_at or _EPOCH, reverse=True)
    rows = rows[:limit]
    # the results themselves only when small: a listing polled every second reads no megabytes
    small = [i for i, r in enumerate(rows) if 0 < r.result_size <= RESULT_PREVIEW_MAX]
    if small:
        async with redis.pipeline(transaction=False) as pipe:
            for i in small:
                pipe.hget(app.keys(rows[i].queue).job(rows[i].id), "result")
            results = await pipe.execute()
        for i, raw in zip(small, results, strict=True):
            rows[i] = replace(rows[i], result=json_field(raw))
    return rows


async def _failed_jobs(app: App, queue: str, task: str | None, limit: int) -> list[JobSummary]:
    keys, redis = app.keys(queue), app.redis
    out: list[JobSummary] = []
    start, page = 0, max(limit, 100)
    while len(out) < limit:
        ids: list[bytes] = await redis.zrevrange(keys.failed, start, start + page - 1)  # type: ignore[assignment]
        if not ids:
            break
        start += page
        async with redis.pipeline(transaction=False) as pipe:
            for jid in ids:
                pipe.hmget(keys.job(jid.decode(errors="replace")), _SUMMARY_FIELDS)
            records = await pipe.execute()
        for jid, values in zip(ids, records, strict=True):
            row = _summary(jid.decode(errors="replace"), queue, values)
            if row.status == "failed" and (task is None or row.task == task):
                out.append(row)  # (expired, retried or requeued ids are skipped)
    return out[:limit]


async def _scanned_jobs(
    app: App, queue: str, statuses: set[str] | None, task: str | None, limit: int
) -> list[JobSummary]:
    keys, redis = app.keys(queue), app.redis
    prefix = keys.job_prefix
    match = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
    out: list[JobSummary] = []
    cursor: int = 0
    while True:
        found: list[bytes]
        cursor, found = await scan(redis, cursor, match, 1000)
        if found:
            async with redis.pipeline(transaction=False) as pipe:
                for key in found:
                    pipe.hmget(key, _SUMMARY_FIELDS)
                records = await pipe.execute(raise_on_error=False)
            for key, values in zip(found, records, strict=True):
                if isinstance(values, Exception) or values[0] is None:
                    continue  # not a hash (another program's key), or gone meanwhile
                row = _summary(key.decode(errors="replace")[len(prefix) :], queue, values)
                if (statuses is None or row.status in statuses) and (
                    task is None or row.task == task
                ):
                    out.append(row)
        if cursor == 0 or len(out) >= limit:
            return out[:limit]


# -- the dead-letter stream ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a queue's dead-letter stream (written by ``bury`` in scripts/worker.py).

    ``entry`` is its id in the dead-letter stream (what ``aioq dlq show/requeue`` take);
    ``stream_entry`` the id the job had on the queue's stream; ``fields`` the raw stream entry;
    ``job`` the job record as it was when buried (``None`` when there was none): a copy, so
    its ``status`` is what it was then (often "running"). ``current`` is the job's record as it
    is now, read live by ``find_dead_letter`` (``None`` when it has expired or was never read:
    ``dead_letters`` leaves it unread).
    """

    entry: str
    queue: str
    job_id: str | None
    task: str | None
    reason: str
    at: datetime | None
    stream_entry: str
    fields: dict[str, str] | list[Any]
    job: dict[str, str] | None
    current: dict[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = self.at.isoformat() if self.at is not None else None
        return d


def _dead_letter(queue: str, entry_id: bytes, raw: dict[bytes, bytes]) -> DeadLetter:
    fields = flat_pairs(json_field(raw.get(b"fields")))
    job = flat_pairs(json_field(raw.get(b"job")))
    snapshot = job if isinstance(job, dict) else None
    return DeadLetter(
        entry=entry_id.decode(),
        queue=queue,
        job_id=text_field(raw.get(b"id")),
        task=snapshot.get("task") if snapshot else None,
        reason=text_field(raw.get(b"reason")) or "",
        at=time_field(raw.get(b"at")),
        stream_entry=text_field(raw.get(b"entry")) or "",
        fields=fields if isinstance(fields, dict | list) else [],
        job=snapshot,
    )


async def dead_letters(
    app: App, queues: list[str] | None = None, limit: int = 100
) -> list[DeadLetter]:
    """The newest ``limit`` dead-letter entries of the given queues (default: all)."""
    names = queues or app.queues
    async with app.redis.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.xrevrange(app.keys(q).dead, count=limit)
        replies = await pipe.execute()
    out = [_dead_letter(q, eid, raw) for q, r in zip(names, replies, strict=True) for eid, raw in r]
    out.sort(key=lambda d: _entry_order(d.entry), reverse=True)
    return out[:limit]


async def find_dead_letter(
    app: App, entry_id: str, queues: list[str] | None = None
) -> list[DeadLetter]:
    """The dead-letter entries with this id in the given queues (usually one, or none)."""
    names = queues or app.queues
    async with app.redis.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.xrange(app.keys(q).dead, entry_id, entry_id)
        replies = await pipe.execute(raise_on_error=False)
    found = [
        _dead_letter(q, eid, raw)
        for q, r in zip(names, replies, strict=True)
        if not isinstance(r, Exception)
        for eid, raw in r
    ]
    # the burial copy says what the job was then; the live record what became of it since
    # (retried, failed for good, requeued): both are shown, labelled
    async with app.redis.pipeline(transaction=False) as pipe:
        for d in found:
            pipe.hgetall(app.keys(d.queue).job(d.job_id or ""))
        records = await pipe.execute()
    return [
        replace(d, current={k.decode(): v.decode(errors="replace") for k, v in r.items()} or None)
        if d.job_id
        else d
        for d, r in zip(found, records, strict=True)
    ]


# -- helpers ----------------------------------------------------------------------------------

_EPOCH = datetime.fromtimestamp(0, tz=UTC)


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms or 0), int(seq or 0)


async def cron_stats(app: App) -> list[dict[str, Any]]:
    """Each cron schedule: its task and queue, the last tick handled (fired or skipped), the
    last one that ran (enqueued its job; ``None``: it never ran) and the next one (UTC)."""

    def iso(t: float | None) -> str | None:
        return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()

    if not app.crons:
        return []
    async with app.redis.pipeline(transaction=False) as pipe:
        for s in app.crons:
            keys = app.keys(app.tasks[s.task].queue)
            pipe.get(keys.cron_state(s.name))
            pipe.get(keys.cron_ran(s.name))
        replies = await pipe.execute()
    now = time.time()
    return [
        {
            "schedule": s.name,
            "task": s.task,
            "queue": app.tasks[s.task].queue,
            "catch_up": s.catch_up,
            "last_tick": iso(None if state is None else int(state) / 1000),
            "last_run": iso(None if ran is None else int(ran) / 1000),
            "next_tick": iso(s.next_after(now)),
        }
        for s, state, ran in zip(app.crons, replies[::2], replies[1::2], strict=True)
    ]


async def rate_limit_stats(app: App) -> list[dict[str, str]]:
    """The rate limits in force, per queue and task (run-time overrides win)."""
    out = []
    for q in app.queues:
        for task, limit in (await app.rate_limits(q)).items():
            out.append({"queue": q, "task": task, "limit": limit})
    return out


# -- workflows --------------------------------------------------------------------------------

STEPS_SHOWN = 50
"""Steps a workflow view lists by default (a group of 10,000 members is counted, not listed)."""

_STEP_FIELDS = ("status", "wait", "exc_type", "error", "started_at", "finished_at")
_JOIN_FIELDS = ("total", "done", "fired")
GONE = "gone"
"""The status of a step whose record has expired (or was deleted)."""
PENDING = "pending"
"""The status of a group (its join) that has not fired: members are still to finish."""


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    """One step of a workflow: a job (``task`` is its task's name) or a group (``task`` is
    ``None``: the join that collects its members' outcomes, ``done`` of ``total`` so far).

    ``status`` is the job's (a step waiting for earlier ones is ``scheduled`` with
    ``wait_reason`` "workflow"), a group's ``pending`` until it fired and then how it ended
    (succeeded, failed, cancelled), or ``gone`` when the record has expired. ``index`` is the
    step's place in the workflow's list (the order it was planned in: a chain's steps in
    order, a group before its members); ``result`` marks the step whose outcome is the
    workflow's (what ``enqueue()`` returned)."""

    index: int
    queue: str
    id: str
    task: str | None
    status: str
    wait_reason: str | None = None
    exc_type: str | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    done: int = 0
    total: int = 0
    result: bool = False

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = "job" if self.task is not None else "group"
        d["started_at"], d["finished_at"] = _iso(self.started_at), _iso(self.finished_at)
        return d


@dataclass(frozen=True, slots=True)
class Workflow:
    """A workflow's steps as ``workflow_of`` read them: ``steps`` lists at most ``limit`` in
    workflow order (then any failed ones and the result step past those), ``total`` counts
    them all, ``by_status`` counts the job steps (not the groups) by status, ``groups`` the
    groups. ``queue`` is where the workflow's record lives (``keys.flow``)."""

    id: str
    queue: str
    total: int
    groups: int
    by_status: dict[str, int]
    steps: list[WorkflowStep]
    limit: int

    @property
    def listed_all(self) -> bool:
        return len(self.steps) == self.total

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "queue": self.queue, "total": self.total, "groups": self.groups,
            "by_status": self.by_status, "limit": self.limit, "listed_all": self.listed_all,
            "steps": [s.as_dict() for s in self.steps],
        }  # fmt: skip


async def workflow_of(
    app: App, job_id: str, queue: str | None = None, limit: int = STEPS_SHOWN
) -> Workflow | None:
    """The workflow the job ``job_id`` is a step of, with every step's status; ``job_id`` may
    also be a group's id (``GroupJob.id``) or the workflow's own (``JobInfo.workflow``).
    ``None`` when the job is no workflow's step (enqueued alone) or the workflow's record has
    expired. Raises ``JobNotFound`` when ``queue`` (default: any of the app's queues) has no
    such job, group or workflow.

    Three pipelined round trips, whatever the workflow's size: the id's records (in every
    queue at once when ``queue`` is not given), the workflow's record, then one HMGET per
    step. At most ``limit`` steps are listed (``Workflow`` says which); all are counted.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit!r}")
    names = [queue] if queue is not None else app.queues
    redis = app.redis
    async with redis.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.hmget(app.keys(q).job(job_id), ("status", "flow"))
            # a group's join has a total; the workflow's record has its steps
            pipe.hmget(app.keys(q).flow(job_id), ("total", "flow", "steps"))
        replies = await pipe.execute(raise_on_error=False)
    flow: str | None = None
    for q, (job, record) in zip(names, zip(replies[::2], replies[1::2], strict=True), strict=True):
        if not isinstance(job, Exception) and job[0] is not None:
            flow = text_field(job[1]) or ""
        elif not isinstance(record, Exception) and record[0] is not None:
            flow = text_field(record[1]) or ""
        elif not isinstance(record, Exception) and record[2] is not None:
            flow = f"{q} {job_id}"
        else:
            continue
        break
    if flow is None:
        raise JobNotFound(job_id, names)
    flow_queue, _, flow_id = flow.partition(" ")
    if not flow_id:
        return None
    wf: list[bytes | None] = await redis.hmget(  # type: ignore[assignment]
        app.keys(flow_queue).flow(flow_id), ("steps", "result")
    )
    raw_steps, raw_result = wf
    plan = json_field(raw_steps)
    if not isinstance(plan, list):
        return None
    steps = [
        (str(s[0]), str(s[1]), str(s[2]) or None)
        for s in plan
        if isinstance(s, list) and len(s) == 3
    ]
    outcome = json_field(raw_result)
    result = (
        (str(outcome[1]), str(outcome[2]))
        if isinstance(outcome, list) and len(outcome) == 3
        else None
    )
    return await _read_steps(app, flow_id, flow_queue, steps, result, limit)


async def _read_steps(
    app: App,
    flow_id: str,
    flow_queue: str,
    plan: list[tuple[str, str, str | None]],
    result: tuple[str, str] | None,
    limit: int,
) -> Workflow:
    async with app.redis.pipeline(transaction=False) as pipe:
        for q, sid, task in plan:
            if task is None:
                pipe.hmget(app.keys(q).flow(sid), _JOIN_FIELDS)
            else:
                pipe.hmget(app.keys(q).job(sid), _STEP_FIELDS)
        replies = await pipe.execute(raise_on_error=False)
    rows: list[WorkflowStep] = []
    by_status: dict[str, int] = {}
    groups = 0
    for i, ((q, sid, task), values) in enumerate(zip(plan, replies, strict=True)):
        row = _step(i, q, sid, task, values, (q, sid) == result)
        rows.append(row)
        if task is None:
            groups += 1
        else:
            by_status[row.status] = by_status.get(row.status, 0) + 1
    # past the first ``limit``: what an operator looks for in a big group, the failures, and
    # the step whose outcome is the workflow's
    failed = [r.index for r in rows[limit:] if r.status == JobStatus.FAILED.value][:limit]
    picked = {*range(min(limit, len(rows))), *failed, *(r.index for r in rows if r.result)}
    shown = [rows[i] for i in sorted(picked)]
    return Workflow(flow_id, flow_queue, len(rows), groups, by_status, shown, limit)


def _step(
    index: int, queue: str, sid: str, task: str | None, values: Any, is_result: bool
) -> WorkflowStep:
    if isinstance(values, Exception):  # not a hash: not aioq's record
        return WorkflowStep(index, queue, sid, task, GONE, result=is_result)
    if task is None:
        total, done, fired = values
        if total is None:
            return WorkflowStep(index, queue, sid, None, GONE, result=is_result)
        return WorkflowStep(
            index, queue, sid, None, text_field(fired) or PENDING,
            done=int_field(done), total=int_field(total), result=is_result,
        )  # fmt: skip
    v = dict(zip(_STEP_FIELDS, values, strict=True))
    status = text_field(v["status"])
    if status is None:
        return WorkflowStep(index, queue, sid, task, GONE, result=is_result)
    return WorkflowStep(
        index, queue, sid, task, status,
        wait_reason=text_field(v["wait"]) if status == JobStatus.SCHEDULED.value else None,
        exc_type=text_field(v["exc_type"]), error=text_field(v["error"]),
        started_at=time_field(v["started_at"]), finished_at=time_field(v["finished_at"]),
        result=is_result,
    )  # fmt: skip


# -- concurrency keys -----------------------------------------------------------------------

KEY_SCAN = 1000
"""Keys at their limit a view reads at most per queue (the first of the queue's index)."""


@dataclass(frozen=True, slots=True)
class KeyStats:
    """A concurrency key at its limit, with jobs waiting for a place (``scripts/keyed.lua``).

    ``active``: the places held (jobs on a stream or running, or sent back for a moment by a
    rate limit); ``waiting``: the jobs waiting for a place (one cancelled while it waited
    counts until its turn comes); ``concurrency`` and ``rate``: the key's limits as its jobs
    carry them (``None``: no such limit).
    """

    queue: str
    task: str
    key: str
    active: int
    waiting: int
    concurrency: int | None
    rate: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def key_stats(app: App, queues: list[str] | None = None, limit: int = 20) -> list[KeyStats]:
    """The concurrency keys at their limit with jobs waiting, the most waiting first: up to
    ``limit`` of the first ``KEY_SCAN`` such keys of each queue (given queues, default all).
    Three round trips: each queue's index of keys with jobs waiting, how many wait on each and
    hold places, and one waiting job's limits for each key shown."""
    names = queues or app.queues
    redis = app.redis
    async with redis.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.zrange(app.keys(q).keyed, 0, KEY_SCAN - 1)
        indexes: list[list[bytes]] = await pipe.execute()
    found = [(q, g) for q, groups in zip(names, indexes, strict=True) for g in groups]
    if not found:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for q, g in found:
            pipe.llen(app.keys(q).keywait(g))
            pipe.llen(app.keys(q).keyrun(g))
        counts = await pipe.execute()
    rows = [
        (q, g, int(waiting), int(held))
        for (q, g), waiting, held in zip(found, counts[::2], counts[1::2], strict=True)
        if waiting
    ]
    rows.sort(key=lambda r: r[2], reverse=True)
    rows = rows[:limit]
    async with redis.pipeline(transaction=False) as pipe:
        for q, g, _, _ in rows:
            pipe.lindex(app.keys(q).keywait(g), 0)
        heads: list[bytes | None] = await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:
        for (q, _, _, _), head in zip(rows, heads, strict=True):
            pipe.hget(app.keys(q).job(member_job(head) if head else ""), "keyed")
        specs: list[bytes | None] = await pipe.execute(raise_on_error=False)
    out = []
    for (q, g, waiting, held), spec in zip(rows, specs, strict=True):
        task, key = split_group(g)
        concurrency, rate = _key_limits(spec if isinstance(spec, bytes) else None)
        out.append(KeyStats(q, task, key, held, waiting, concurrency, rate))
    return out


def _key_limits(spec: bytes | None) -> tuple[int | None, str | None]:
    """(concurrency, rate) from a job's ``keyed`` ("<concurrency> <n> <period ms> <key>")."""
    try:
        concurrency, n, period = (int(x) for x in (spec or b"").split(b" ", 3)[:3])
    except ValueError:
        return None, None
    rate: str | None = None
    if n and period:
        try:
            rate = str(RateLimit(n, period))
        except KeyError:  # a period no unit names (another program's record)
            rate = f"{n}/{period}ms"
    return concurrency or None, rate
