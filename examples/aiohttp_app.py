"""aiohttp + aioq: handlers enqueue jobs, and a worker in the same process runs them.

Run it from the repository root (Redis from ``$AIOQ_REDIS_URL``, default localhost:6379)::

    python -m examples.aiohttp_app                            # serves on localhost:8080

    curl -X POST localhost:8080/orders -H 'content-type: application/json' \\
         -d '{"item": "mug", "quantity": 3}'                  # -> {"job_id": "..."}
    curl localhost:8080/jobs/JOB_ID/result?timeout=5          # waits for the result
"""

from collections.abc import AsyncIterator

from aiohttp import web

from aioq import Job, JobNotFound, TaskFailed, Worker
from examples.tasks import Receipt, place_order
from examples.tasks import app as queue_app

routes = web.RouteTableDef()


async def aioq_worker(app: web.Application) -> AsyncIterator[None]:
    # A cleanup context: the code before `yield` runs at start-up, the code after it at
    # shutdown (after the server stops taking requests). The worker runs in the background
    # of aiohttp's event loop in between, and drains its running jobs on the way out.
    try:
        async with Worker(queue_app, concurrency=50):
            yield
    finally:
        await queue_app.aclose()  # close this event loop's Redis connections


@routes.post("/orders")
async def create_order(request: web.Request) -> web.Response:
    """Enqueue the order (one round trip to Redis) and answer at once with its job id."""
    try:
        body = await request.json()
        item, quantity = str(body["item"]), int(body["quantity"])
    except (KeyError, TypeError, ValueError):
        raise web.HTTPBadRequest(text='expected {"item": str, "quantity": int}') from None
    job = await place_order.enqueue(item, quantity)
    return web.json_response({"job_id": job.id}, status=202)


@routes.get("/jobs/{job_id}/result")
async def get_result(request: web.Request) -> web.Response:
    """Wait up to ``?timeout=`` seconds (default 10) for the job's result (a long poll)."""
    job: Job[Receipt] = queue_app.job(request.match_info["job_id"])
    try:
        timeout = min(float(request.query.get("timeout", "10")), 30.0)
    except ValueError:
        raise web.HTTPBadRequest(text="timeout must be a number of seconds") from None
    try:
        # Pushed, not polled: the worker publishes the completion, and one shared
        # subscription per process wakes this handler.
        receipt = await job.result(timeout=timeout)
    except JobNotFound as exc:
        raise web.HTTPNotFound(text=str(exc)) from None
    except TimeoutError as exc:
        raise web.HTTPGatewayTimeout(text=str(exc)) from None
    except TaskFailed as exc:
        return web.json_response({"error": str(exc), "type": exc.exc_type}, status=422)
    return web.json_response(receipt)


def create_app() -> web.Application:
    app = web.Application()
    app.add_routes(routes)
    app.cleanup_ctx.append(aioq_worker)
    return app


if __name__ == "__main__":
    web.run_app(create_app(), host="localhost", port=8080)
