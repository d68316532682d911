"""An app for the TLS and ACL tests (``tests/test_tls.py``, ``tests/test_acl.py``): its name
comes from $AIOQ_APP_NAME and its signing key, when any, from $AIOQ_TEST_SIGNING_KEY, so a
test builds the same app in-process with ``make_app`` and runs it under the CLI."""

from __future__ import annotations

import asyncio
import os

from aioq import App, current_job


def make_app(
    name: str, redis_url: str | None = None, signing_key: bytes | None = None, cron: bool = False
) -> App:
    """``cron``: also a schedule firing every second (``tick``)."""
    app = App(name, redis_url=redis_url, visibility_timeout=5.0, signing_key=signing_key)

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task
    async def nap(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @app.task(queue="emails", retries=1, backoff=0.01)
    async def send(to: str) -> str:
        if to.startswith("retry") and current_job().attempt == 1:  # a retry, through Redis
            raise ConnectionError("smtp hiccup")
        return f"sent to {to}"

    @app.task
    async def steps(n: int) -> int:
        for i in range(1, n + 1):
            await current_job().set_progress(i)
            await asyncio.sleep(0.02)
        return n

    @app.task(rate_limit="5/s")
    async def limited(i: int) -> int:
        return i

    if cron:

        @app.cron(every=1)
        async def tick() -> None:
            return None

    return app


app = make_app(
    os.environ.get("AIOQ_APP_NAME", "secure"),
    signing_key=os.environ.get("AIOQ_TEST_SIGNING_KEY", "").encode() or None,
)
