"""FastAPI + aioq: handlers enqueue jobs, and a worker in the same process runs them.

Run it from the repository root (Redis from ``$AIOQ_REDIS_URL``, default localhost:6379)::

    uvicorn examples.fastapi_app:app

    curl -X POST localhost:8000/orders -H 'content-type: application/json' \\
         -d '{"item": "book", "quantity": 2}'                 # -> {"job_id": "..."}
    curl localhost:8000/jobs/JOB_ID                           # status, result or error
    curl localhost:8000/jobs/JOB_ID/result?timeout=5          # waits for the result
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query, status
from pydantic import BaseModel, Field

from aioq import Job, JobCancelled, JobNotFound, JobStatus, TaskFailed, Worker
from examples.tasks import Receipt, place_order
from examples.tasks import app as queue_app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The worker shares the server's event loop: `async with` starts it in the background
    # before the first request is served, and on shutdown lets running jobs finish (handing
    # back any that overrun) before the process exits. Enqueueing works without it: drop
    # these lines and run `aioq worker examples.tasks:app` processes instead to scale out.
    try:
        async with Worker(queue_app, concurrency=50):
            yield
    finally:
        await queue_app.aclose()  # close this event loop's Redis connections


app = FastAPI(title="shop", lifespan=lifespan)


class Order(BaseModel):
    item: str
    quantity: int = Field(gt=0, le=100)


class Enqueued(BaseModel):
    job_id: str


class JobView(BaseModel):
    id: str
    status: JobStatus
    attempts: int
    result: Receipt | None
    error: str | None


@app.post("/orders", status_code=status.HTTP_202_ACCEPTED)
async def create_order(order: Order) -> Enqueued:
    """Enqueue the order (one round trip to Redis) and answer at once with its job id."""
    job = await place_order.enqueue(order.item, order.quantity)
    return Enqueued(job_id=job.id)


@app.get("/jobs/{job_id}")
async def get_job(job_id: str) -> JobView:
    """Where the job is now: a snapshot of its record, without waiting."""
    try:
        info = await queue_app.job(job_id).info()
    except JobNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}") from None
    return JobView(
        id=info.id,
        status=info.status,
        attempts=info.attempts,
        result=info.result,
        error=info.error,
    )


@app.get("/jobs/{job_id}/result")
async def get_result(job_id: str, timeout: Annotated[float, Query(gt=0, le=30)] = 10.0) -> Receipt:
    """Wait up to ``timeout`` seconds for the job's result (a long poll)."""
    job: Job[Receipt] = queue_app.job(job_id)
    try:
        # No polling loop: the worker publishes the job's completion, and one shared
        # subscription per process wakes every handler waiting here.
        return await job.result(timeout=timeout)
    except JobNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}") from None
    except TimeoutError:
        raise HTTPException(
            status.HTTP_504_GATEWAY_TIMEOUT, f"job {job_id!r} not finished after {timeout}s"
        ) from None
    except TaskFailed as exc:  # the task raised: str(exc) is its message
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except JobCancelled:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id!r} was cancelled") from None
