"""aioq without a web framework: a worker embedded in a script's own event loop.

    python examples/embedded_worker.py

It uses the Redis at ``$AIOQ_REDIS_URL`` when that is set; otherwise it starts a private
redis-server (found on PATH) on a unix socket for the length of the run, so it works on a
fresh machine.
"""

import asyncio
import contextlib
import hashlib
import os
import sys

from aioq import App, Worker, current_job
from aioq.embedded import EmbeddedRedis, RedisServerNotFound

app = App(os.environ.get("AIOQ_APP_NAME", "embedded-example"))


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task
def fingerprint(text: str) -> str:
    # A plain `def` task runs in a worker thread, so blocking work does not stall the loop.
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@app.task(retries=2, backoff=0.05)
async def fetch_page(url: str) -> str:
    job = current_job()  # the running job: its id, task name and attempt (1-based)
    await job.set_progress({"attempt": job.attempt})  # visible in job.info().progress
    if job.attempt == 1:
        # a failure with retries left: the job is scheduled again after a jittered backoff
        raise ConnectionError(f"{url}: connection reset")
    return f"{url} fetched on attempt {job.attempt}"


async def main() -> None:
    # The worker runs in the background of this event loop until the block exits, then
    # finishes its running jobs and stops.
    async with Worker(app, concurrency=10):
        # Each enqueue is one round trip and returns a Job typed after its task (Job[int]...).
        total = await add.enqueue(2, 3)
        digest = await fingerprint.enqueue("aioq")
        page = await fetch_page.enqueue("https://example.com")
        # result() waits for the worker's pushed completion notice; it does not poll
        print(f"add(2, 3) = {await total.result(timeout=10)}")
        print(f"fingerprint('aioq') = {await digest.result(timeout=10)}")
        print(f"fetch_page(...) = {await page.result(timeout=10)}")
        info = await page.info()
        print(f"fetch_page: {info.status.value} after {info.attempts} attempts")
    await app.aclose()  # close this event loop's Redis connections


def run() -> None:
    with contextlib.ExitStack() as stack:
        if not os.environ.get("AIOQ_REDIS_URL"):
            try:
                server = stack.enter_context(EmbeddedRedis())
            except RedisServerNotFound as exc:
                sys.exit(f"embedded_worker: {exc}")
            app.rebind(redis_url=server.url)  # before first use: connections open lazily
            print(f"(no AIOQ_REDIS_URL: started a private redis-server at {server.url})")
        asyncio.run(main())


if __name__ == "__main__":
    run()
