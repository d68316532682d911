# shop.py (examples/quickstart.py in the repository, where tests run it as shown)
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException

from aioq import App, JobNotFound

queue = App("shop")  # Redis from $AIOQ_REDIS_URL, default redis://localhost:6379/0


@queue.task(retries=3, timeout=30)  # a task's name is its function's: "send_receipt"
async def send_receipt(order_id: int, email: str) -> str:
    await asyncio.sleep(0.1)  # stands for the call to a mail service
    return f"receipt for order {order_id} sent to {email}"


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    async with queue:  # on shutdown, closes the app's Redis connections
        yield


api = FastAPI(lifespan=lifespan)


@api.post("/orders/{order_id}/receipt", status_code=202)
async def order_receipt(order_id: int, email: str) -> dict[str, str]:
    job = await send_receipt.enqueue(order_id, email)  # one round trip, checked types
    return {"job_id": job.id}


@api.get("/jobs/{job_id}")
async def job_state(job_id: str) -> dict[str, Any]:
    job = send_receipt.job(job_id)  # Celery's AsyncResult(job_id); no I/O yet
    try:
        if not await job.done():  # queued, scheduled or running
            return {"status": await job.status()}
        info = await job.info()  # succeeded, failed, cancelled or expired
    except JobNotFound:
        raise HTTPException(404, f"no job {job_id!r}") from None
    return {"status": info.status, "result": info.result, "error": info.error}
