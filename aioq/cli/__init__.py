"""The ``aioq`` command line.

    __init__.py   main(): the entry point; ``aioq worker`` goes to worker.py without typer
    target.py     loading MODULE:APP and checking queue names (no CLI framework)
    worker.py     ``aioq worker``: its one (argparse) parser and running the worker
    commands.py   the typer app: info, rate-limit, demo, dashboard, and the others registered
    ops.py        the operations commands: jobs, job, dlq, cancel, retry, purge, pause, ...
    tables.py     printing tables whose ids and task names are never wrapped or cut

Imports only go down that list's dependency order (commands -> ops -> tables/target), never
back, and this module imports nothing at import time: ``import aioq.cli.worker`` stays free
of typer and rich, which is what keeps a worker's start-up short.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Run ``aioq ARGV`` (default: the process's arguments) and exit with its code."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["worker"]:
        from .worker import main as worker_main

        sys.exit(worker_main(args[1:]))
    from .commands import cli

    cli(args, prog_name="aioq")
