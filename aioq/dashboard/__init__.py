"""A small web dashboard for an aioq app: a JSON API and one static page that polls it.

``dashboard(app)`` returns a Starlette ASGI app; mount it into FastAPI/Starlette
(``api.mount("/queues", dashboard(queue_app))``) or serve it with ``aioq dashboard MODULE:APP``.
Every URL the page uses is relative, so it works under any prefix. Needs the ``dashboard``
extra (starlette; uvicorn for the command).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import ops as aioq_ops
from .. import views
from ..app import App
from ..errors import JobCancelled, JobNotFound, RedisUnavailable, TaskFailed
from ..job import Job, JobInfo, JobStatus

__all__ = ["dashboard"]

STATIC = Path(__file__).parent / "static"
FAILED_LIMIT = 20
DEAD_LIMIT = 100
JOBS_LIMIT = 20  # queued, scheduled and running jobs listed per queue
RECENT_LIMIT = 15  # recently finished jobs listed
STEPS_LIMIT = views.STEPS_SHOWN  # a workflow's steps listed in a job's view (all counted)
ACTIVE = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RUNNING)
CANCEL_WAIT = 2.0  # seconds a cancel request waits for a running job's worker to stop it


class _JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)  # e.g. by_priority


def _error(status: int, message: str) -> _JSON:
    return _JSON({"error": message}, status_code=status)


def dashboard(app: App) -> Starlette:
    """The dashboard of ``app`` as an ASGI app (the page at ``/``, the JSON API at ``/api``)."""

    async def index(request: Request) -> Response:
        if not request.url.path.endswith("/"):  # relative URLs need the trailing slash
            return RedirectResponse(request.url.replace(path=request.url.path + "/"), 307)
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    async def overview(request: Request) -> Response:
        async def collect() -> dict[str, Any]:
            failed = await views.list_jobs(app, status=JobStatus.FAILED, limit=FAILED_LIMIT)
            return {
                "app": app.name,
                "tasks": sorted(app.tasks),  # a failed job of any other task gets no Retry
                "queues": [s.as_dict() for s in await views.queue_stats(app)],
                "workers": [w.as_dict() for w in await views.worker_stats(app)],
                "throughput": await views.throughput(app),
                "crons": await views.cron_stats(app),
                "rate_limits": await views.rate_limit_stats(app),
                "failed": [j.as_dict() for j in failed],
                "recent": [j.as_dict() for j in await views.recent_jobs(app, limit=RECENT_LIMIT)],
                "result_preview_max": views.RESULT_PREVIEW_MAX,
            }

        return await _guarded(collect)

    async def jobs(request: Request) -> Response:
        queue = request.query_params.get("queue")
        if queue is not None and queue not in app.queues:
            return _error(400, f"unknown queue {queue!r}")

        async def collect() -> dict[str, Any]:
            # read from each queue's streams, pending-entries lists and scheduled set, then
            # at most JOBS_LIMIT records of each: no scan of the job records
            names = app.queues if queue is None else [queue]
            found = await asyncio.gather(
                *(views.list_jobs(app, status=ACTIVE, queues=[q], limit=JOBS_LIMIT) for q in names)
            )
            return {"limit": JOBS_LIMIT, "jobs": [j.as_dict() for rows in found for j in rows]}

        return await _guarded(collect)

    async def dead(request: Request) -> Response:
        async def collect() -> dict[str, Any]:
            rows = await views.dead_letters(app, limit=DEAD_LIMIT)
            return {"dead": [d.as_dict() for d in rows]}

        return await _guarded(collect)

    async def requeue(request: Request) -> Response:
        entry = request.path_params["entry"]

        async def act() -> dict[str, Any]:
            found = await views.find_dead_letter(app, entry)
            if not found:
                return {"entry": entry, "outcome": "missing"}
            queue = found[0].queue
            outcome = (await aioq_ops.requeue_dead(app, queue, [entry]))[entry]
            return {"entry": entry, "queue": queue, "outcome": outcome}

        return await _guarded(act, ok=lambda r: r["outcome"] == aioq_ops.REQUEUED)

    async def job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        queue = request.query_params.get("queue")  # optional: saves looking the job up
        if queue is not None and queue not in app.queues:
            return _error(400, f"unknown queue {queue!r}")

        async def collect() -> dict[str, Any]:
            try:
                info: JobInfo | None = await app.job(job_id, queue).info()
            except JobNotFound:
                info = None
            flow = None
            if info is None or info.workflow is not None:  # a group's or workflow's id too
                try:
                    where = info.queue if info is not None else queue
                    flow = await views.workflow_of(app, job_id, where, limit=STEPS_LIMIT)
                except JobNotFound:
                    pass
            if info is None and flow is None:
                return {"id": job_id, "error": f"no job {job_id!r} in queues {app.queues}"}
            return {
                "id": job_id,
                "job": views.info_dict(info) if info is not None else None,
                "workflow": flow.as_dict() if flow is not None else None,
            }

        return await _guarded(collect, ok=lambda r: "error" not in r, refused=404)

    async def cancel(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        queue = request.query_params.get("queue")  # optional: saves looking the job up
        if queue is not None and queue not in app.queues:
            return _error(400, f"unknown queue {queue!r}")

        async def act() -> dict[str, Any]:
            job = app.job(job_id, queue)
            try:
                outcome = await _cancel(job)
            except JobNotFound:
                return {"id": job_id, "outcome": "missing"}
            return {"id": job_id, "queue": job.queue, "outcome": outcome}

        return await _guarded(act, ok=lambda r: r["outcome"] in ("cancelled", "cancelling"))

    async def retry(request: Request) -> Response:
        job_id = request.path_params["job_id"]

        async def act() -> dict[str, Any]:
            try:
                task = (await app.job(job_id).info()).task
            except JobNotFound:
                return {"id": job_id, "outcome": "missing"}
            if task not in app.tasks:  # it would only fail again
                return {"id": job_id, "outcome": f"no task named {task!r} in app {app.name!r}"}
            outcome = (await aioq_ops.retry(app, [job_id]))[job_id]
            return {"id": job_id, "outcome": outcome}

        return await _guarded(act, ok=lambda r: r["outcome"] == aioq_ops.REQUEUED)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/api/overview", overview, methods=["GET"]),
        Route("/api/jobs", jobs, methods=["GET"]),
        Route("/api/dead", dead, methods=["GET"]),
        Route("/api/dead/{entry}/requeue", requeue, methods=["POST"]),
        Route("/api/jobs/{job_id}", job, methods=["GET"]),
        Route("/api/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        Route("/api/jobs/{job_id}/retry", retry, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)


async def _cancel(job: Job[Any]) -> str:
    """Cancel ``job`` and say how it ended: "cancelled"; "cancelling" when it is still
    running ``CANCEL_WAIT`` seconds later (its worker has not stopped it yet); "finished" when
    it had finished before; or the status it ended with when it finished on its own meanwhile.
    """
    if not await job.cancel():
        return "finished"
    try:  # a queued or scheduled job is cancelled already; a running one within a round trip
        await job.result(timeout=CANCEL_WAIT)
    except JobCancelled:
        return "cancelled"
    except TimeoutError:
        return "cancelling"
    except TaskFailed:
        pass
    return (await job.status()).value


async def _guarded(work: Any, ok: Any = None, refused: int = 409) -> Response:
    """Run ``work()``; a Redis that does not answer is a 503 with the reason. With ``ok``, an
    outcome it rejects is a 409, or ``refused`` (the body still says what happened)."""
    try:
        result = await work()
    except RedisUnavailable as exc:
        return _error(503, str(exc))
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        return _error(503, f"cannot reach Redis: {exc}")
    status = 200 if ok is None or ok(result) else refused
    return _JSON(result, status_code=status)
