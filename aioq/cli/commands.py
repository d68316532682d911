"""The ``aioq`` command (typer): info, rate-limit, demo, redis and dashboard here, the operations
commands from ``ops.py``, and ``worker``, which only forwards to ``worker.py``'s own parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..connection import redacted
from ..embedded import RedisServerNotFound
from ..ratelimit import parse_rate
from . import ops
from .common import fail, load_app, run
from .tables import Column, console, duration, print_table

cli = typer.Typer(
    name="aioq",
    help="aioq: an asyncio-native task queue on Redis streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DISTRIBUTION = "aioq-redis"  # the name on the package index (``aioq`` there is another project)


def installed_version() -> str:
    """The installed distribution's version; the package's own ``__version__`` when aioq runs
    from a checkout that was never installed (PYTHONPATH)."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


def print_version(value: bool) -> None:
    if value:
        typer.echo(f"aioq {installed_version()}")
        raise typer.Exit()


@cli.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=print_version, is_eager=True, help="print the version"
        ),
    ] = False,
) -> None:
    """aioq: an asyncio-native task queue on Redis streams."""


@cli.command(
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def worker(ctx: typer.Context) -> None:
    """Run a worker until SIGTERM/SIGINT (or, with --burst, until the queues are empty)."""
    from .worker import main

    # `aioq worker ...` normally never gets here (aioq.cli.main goes straight to worker.py);
    # this is the same command for callers of the typer app, with the same one parser
    raise typer.Exit(main(ctx.args))


@cli.command()
def info(
    target: Annotated[str, typer.Argument(metavar="MODULE:APP", help="the app to inspect")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Queues of an app (queued, running, scheduled, failed, dead, paused), its throughput over
    the last minute, its workers, cron schedules with their next tick, and the rate limits in
    force."""
    from .. import ops as actions
    from .. import views

    app = load_app(target)

    async def collect() -> dict[str, Any]:
        await actions.prune_workers(app)  # heartbeats of workers that died without a clean stop
        return {
            "app": app.name,
            "queues": [s.as_dict() for s in await views.queue_stats(app)],
            "throughput": views.throughput_over(await views.throughput(app)),
            "workers": [w.as_dict() for w in await views.worker_stats(app)],
            "crons": await views.cron_stats(app),
            "rate_limits": await views.rate_limit_stats(app),
        }

    report = run(app, collect)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    counts = ("queued", "running", "scheduled", "failed", "dead")
    rows = []
    for row in report["queues"]:
        cells = [row["queue"], *(str(row[c]) for c in counts)]
        levels = sorted(row["by_priority"].items(), reverse=True)
        if any(level != 0 for level, _ in levels):  # e.g. "12 (p9 2, p0 10)"
            cells[1] += " (" + ", ".join(f"p{level} {n}" for level, n in levels) + ")"
        rows.append([*cells, "paused" if row["paused"] else ""])
    print_table(
        f"aioq app {app.name!r} at {redacted(app.redis_url)}",
        [Column("queue"), *(Column(c, justify="right") for c in (*counts, "paused"))],
        rows,
    )
    tput = report["throughput"]
    console().print(
        f"throughput: {tput['rate']:.1f} jobs/s over the last minute ({tput['jobs']} jobs)"
    )
    _extra_tables(report)
    workers = report["workers"]
    if not workers:
        console().print("no worker alive (none has sent a heartbeat in the last 6 s)")
        return
    print_table(
        f"{len(workers)} worker(s) alive",
        [Column("worker"), Column("host"), Column("pid", justify="right"),
         Column("process", justify="right"), Column("queues"),
         *(Column(c, justify="right") for c in ("concurrency", "running", "done", "uptime",
                                                 "last heartbeat"))],
        [
            [w["consumer"], w["host"], str(w["pid"]), _process(w), ",".join(w["queues"]),
             str(w["concurrency"]), str(w["running"]), str(w["done"]),
             duration(w["uptime"]), f"{w['last_beat']:.1f}s ago"]
            for w in workers
        ],
    )  # fmt: skip


def _process(w: dict[str, Any]) -> str:
    """A process of ``aioq worker --processes N``: "#2 of 4242" (its number, its supervisor's
    pid); "-" for a worker on its own."""
    return "-" if w.get("process") is None else f"#{w['process']} of {w['supervisor']}"


def _extra_tables(report: dict[str, Any]) -> None:
    if report["crons"]:
        print_table(
            "cron schedules",
            [Column(c) for c in ("schedule", "queue", "catch-up", "last tick (UTC)",
                                 "next tick (UTC)")],
            [[c["schedule"], c["queue"], c["catch_up"], c["last_tick"] or "never",
              c["next_tick"]] for c in report["crons"]],
        )  # fmt: skip
    if report["rate_limits"]:
        print_table(
            "rate limits in force",
            [Column("queue"), Column("task"), Column("limit")],
            [[r["queue"], r["task"], r["limit"]] for r in report["rate_limits"]],
        )


@cli.command("rate-limit")
def rate_limit(
    target: Annotated[str, typer.Argument(metavar="MODULE:APP", help="the app")],
    task: Annotated[str, typer.Argument(help="the task's name")],
    rate: Annotated[
        str | None, typer.Argument(help='"N/s", "N/m" or "N/h"; omit with --clear')
    ] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="remove the override: the code's limit applies")
    ] = False,
) -> None:
    """Change a task's global rate limit for every running worker, without restarts."""
    app = load_app(target)
    if task not in app.tasks:
        known = ", ".join(sorted(app.tasks)) or "none"
        raise fail(f"unknown task {task!r} in {target} (tasks: {known})")
    if (rate is None) == (not clear):
        raise fail("give a rate such as 10/m, or --clear")
    if rate is not None:
        try:
            parse_rate(rate)
        except ValueError as exc:
            raise fail(str(exc)) from None

    async def apply() -> dict[str, str]:
        await app.set_rate_limit(task, rate)
        return await app.rate_limits(app.tasks[task].queue)

    limits = run(app, apply)
    typer.echo(f"{task}: {limits.get(task, 'no limit')}")


@cli.command()
def demo(
    jobs: Annotated[int, typer.Option(help="how many example jobs to enqueue", min=1)] = 200,
    concurrency: Annotated[int, typer.Option(min=1)] = 50,
    port: Annotated[
        int, typer.Option(help="dashboard port on 127.0.0.1 (0: a free one)", min=0, max=65535)
    ] = 0,
    keep: Annotated[
        bool,
        typer.Option(
            help="after the batch, keep the worker, Redis and dashboard up with a trickle of "
            "example jobs until Ctrl-C/SIGTERM"
        ),
    ] = False,
) -> None:
    """The quickstart: a private redis-server, a worker, example jobs, a live view (the web
    dashboard and an `aioq info` command line for the demo's Redis while it runs)."""
    from ..demo import DemoError, run_demo

    try:
        run_demo(jobs=jobs, concurrency=concurrency, port=port, keep=keep)
    except (RedisServerNotFound, DemoError) as exc:
        raise fail(str(exc)) from None


@cli.command("redis")
def redis_server(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1", min=1, max=65535)] = 6379,
    data_dir: Annotated[
        Path, typer.Option("--dir", help="where the append-only file is kept (made if missing)")
    ] = Path(".redis-data"),
) -> None:
    """A local redis-server for development that keeps its data and its address between
    starts (unlike --embedded-redis); Ctrl-C stops it."""
    import os

    from ..embedded import persistent_args, redis_server_path

    try:
        executable = redis_server_path()
    except RedisServerNotFound as exc:
        raise fail(str(exc)) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"redis://127.0.0.1:{port}/0"
    typer.echo(f"aioq: redis-server at {url}, data kept in {data_dir}; Ctrl-C stops it", err=True)
    if port != 6379:  # 6379 is what an App uses without a redis_url or $AIOQ_REDIS_URL
        typer.echo(f"aioq: export AIOQ_REDIS_URL={url}", err=True)
    # redis-server becomes this process: signals reach it directly and it saves on the way out
    os.execv(executable, persistent_args(executable, port, data_dir))


ops.register(cli)  # jobs, job, dlq, cancel, retry, purge, pause, resume, enqueue


@cli.command()
def dashboard(
    target: Annotated[str, typer.Argument(metavar="MODULE:APP", help="the app to show")],
    port: Annotated[int, typer.Option(help="port to serve on", min=0, max=65535)] = 8000,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
) -> None:
    """Serve the web dashboard (queues, workers, failed jobs, dead letters, crons, limits)."""
    try:
        import uvicorn

        from ..dashboard import dashboard as make_dashboard
    except ImportError as exc:
        missing = (exc.name or "starlette").split(".")[0]
        raise fail(f"the dashboard needs {missing}: pip install 'aioq-redis[dashboard]'") from None
    app = load_app(target)
    typer.echo(f"aioq dashboard for {app.name!r} at http://{host}:{port}/", err=True)
    uvicorn.run(make_dashboard(app), host=host, port=port, log_level="warning")
