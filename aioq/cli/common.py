"""What the typer commands share: failing with one line, running work against Redis, and the
option types several commands take."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypeVar

import typer
from redis.exceptions import RedisError

from ..app import App
from ..connection import redacted
from ..errors import PermissionDenied, RedisUnavailable
from . import target

T = TypeVar("T")

Target = Annotated[str, typer.Argument(metavar="MODULE:APP", help="the app")]
Json = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
Queues = Annotated[
    list[str] | None, typer.Option("--queue", "-q", help="only this queue (repeatable)")
]


def fail(message: str) -> typer.Exit:
    """Print ``aioq: message`` on stderr; raise what this returns to exit 2."""
    typer.echo(f"aioq: {message}", err=True)
    return typer.Exit(2)


def load_app(spec: str) -> App:
    try:
        return target.load_app(spec)
    except target.CliError as exc:
        raise fail(str(exc)) from None


def known_queues(app: App, queues: Sequence[str] | None) -> list[str]:
    """The queues asked for (default: all the app knows); an unknown name is exit 2."""
    try:
        return target.known_queues(app, queues)
    except target.CliError as exc:
        raise fail(str(exc)) from None


def run(app: App, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` against the app's Redis and close it; a Redis that does not answer (or
    fails) is one line, exit 2. Redis is pinged first, so a dead one fails before any work."""

    async def main() -> T:
        try:
            await app.ping()
            return await work()
        finally:
            await app.aclose()

    try:
        return asyncio.run(main())
    except (RedisUnavailable, PermissionDenied) as exc:
        raise fail(str(exc)) from None
    except (RedisError, OSError) as exc:
        where = redacted(app.redis_url)
        raise fail(f"Redis at {where} failed: {type(exc).__name__}: {exc}") from None


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))
