"""A small app for CLI tests: its name comes from $AIOQ_APP_NAME so each test is isolated."""

from __future__ import annotations

import os

from aioq import App

app = App(os.environ.get("AIOQ_APP_NAME", "basic"), default_queue="default")


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task(queue="emails")
async def send(to: str) -> str:
    return f"sent to {to}"


@app.cron(every=3600)
async def hourly() -> None:
    return None
