"""An app for the operations CLI tests (``tests/test_ops_cli.py``).

The CLI imports ``app``, named by $AIOQ_APP_NAME; a test builds the same app in-process with
``make_app(name, redis_url)`` to enqueue and to run workers without a subprocess. ``boom``
fails until its side key exists, so a test can fail a job, fix the cause and retry it.
"""

from __future__ import annotations

import asyncio
import os

from aioq import App, current_job


def fixed_key(app_name: str) -> str:
    """While this key exists, ``boom`` succeeds (outside aioq's key layout)."""
    return f"aioq-test:{app_name}:fixed"


def make_app(name: str, redis_url: str | None = None, result_ttl: int = 86_400) -> App:
    app = App(name, redis_url=redis_url, visibility_timeout=5.0, result_ttl=result_ttl)

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task
    async def boom(message: str) -> str:
        if not await app.redis.exists(fixed_key(app.name)):
            raise ValueError(message)
        return f"fixed: {message}"

    @app.task
    async def nap(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @app.task
    async def steps(n: int, pause: float = 0.01) -> int:
        for i in range(1, n + 1):
            await current_job().set_progress({"step": i, "of": n})
            await asyncio.sleep(pause)
        return n

    @app.task(queue="emails")
    async def send(to: str) -> str:
        return f"sent to {to}"

    return app


app = make_app(os.environ.get("AIOQ_APP_NAME", "ops"))
