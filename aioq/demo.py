"""``aioq demo``: the whole loop on one machine, in a few seconds.

A private redis-server (unix socket, temp dir), a worker in the same event loop, a batch of
example jobs (some slow, some failing then retrying, one failing for good), a progress bar,
and a table of outcomes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .app import App
from .context import current_job
from .embedded import EmbeddedRedis
from .errors import TaskFailed
from .job import Job
from .worker import Worker


def build_app(redis_url: str) -> App:
    app = App("demo", redis_url=redis_url)

    @app.task
    async def resize_image(image_id: int, width: int) -> dict[str, int]:
        await asyncio.sleep(random.uniform(0.01, 0.2))  # stands for real I/O
        return {"image": image_id, "width": width}

    @app.task(retries=2, backoff=0.05)
    async def charge_card(order_id: int) -> str:
        if current_job().attempt == 1 and order_id % 7 == 0:
            raise ConnectionError(f"payment gateway timed out for order {order_id}")
        return f"charged order {order_id} on attempt {current_job().attempt}"

    @app.task
    async def send_email(to: str) -> None:
        if to.endswith(".invalid"):
            raise ValueError(f"cannot deliver to {to}")
        await asyncio.sleep(0.01)

    @app.task
    def checksum(data: str) -> int:  # a sync task: runs in a worker thread
        return sum(data.encode()) % 65_521

    return app


async def _run(redis_url: str, jobs: int, concurrency: int, console: Console) -> None:
    app = build_app(redis_url)
    t = app.tasks
    calls = []
    for i in range(jobs):
        kind = i % 4
        if kind == 0:
            calls.append(t["resize_image"].call(i, 640))
        elif kind == 1:
            calls.append(t["charge_card"].call(i))
        elif kind == 2:
            to = f"user{i}@example.invalid" if i % 50 == 2 else f"user{i}@example.com"
            calls.append(t["send_email"].call(to))
        else:
            calls.append(t["checksum"].call(f"payload-{i}"))
    started = time.perf_counter()
    async with Worker(app, concurrency=concurrency) as worker:
        console.print(
            f"[bold]aioq demo[/] - worker [cyan]{worker.consumer}[/], concurrency {concurrency}, "
            f"Redis at [cyan]{redis_url}[/]"
        )
        enqueued: list[Job[object]] = await app.enqueue_many(calls)
        console.print(f"enqueued {len(enqueued)} jobs in one pipelined round trip")
        outcomes: Counter[tuple[str, str]] = Counter()
        examples: dict[tuple[str, str], str] = {}
        columns = (
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("running jobs", total=len(enqueued))

            async def wait(job: Job[object], task: str) -> None:
                try:
                    value = await job.result(timeout=60)
                    key = (task, "succeeded")
                    examples.setdefault(key, repr(value))
                except TaskFailed as exc:
                    key = (task, f"failed: {exc.exc_type}")
                    examples.setdefault(key, str(exc))
                outcomes[key] += 1
                progress.advance(bar)

            await asyncio.gather(
                *(wait(j, c.task.name) for j, c in zip(enqueued, calls, strict=True))
            )
    elapsed = time.perf_counter() - started
    retried = 0
    for job in enqueued[1::4]:
        retried += (await job.info()).attempts > 1
    table = Table(title=f"{jobs} jobs in {elapsed:.2f}s")
    table.add_column("task")
    table.add_column("outcome")
    table.add_column("jobs", justify="right")
    table.add_column("example")
    for (task, outcome), n in sorted(outcomes.items()):
        style = "green" if outcome == "succeeded" else "red"
        table.add_row(task, f"[{style}]{outcome}[/]", str(n), examples[(task, outcome)][:60])
    console.print(table)
    console.print(f"{retried} charge_card jobs failed once and succeeded on a retry.")
    console.print(
        "Next: run your own worker with [bold]aioq worker yourapp.tasks:app[/] "
        "(see README.md), or [bold]aioq worker --embedded-redis[/] to try it without a Redis;\n"
        "watch it with [bold]aioq info yourapp.tasks:app[/] or the dashboard, "
        "[bold]aioq dashboard yourapp.tasks:app --port 8000[/] then http://127.0.0.1:8000/."
    )
    await app.aclose()


def run_demo(jobs: int = 200, concurrency: int = 50) -> None:
    console = Console()
    with EmbeddedRedis() as server:
        asyncio.run(_run(server.url, jobs, concurrency, console))
