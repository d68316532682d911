"""The ``aioq`` command's entry point (``python -m aioq`` too).

``aioq worker ...`` goes straight to ``run_worker`` without importing the CLI framework, so a
worker's start-up is its imports of aioq and redis only; everything else (and ``--help``) goes
to the typer app in ``cli.py``.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["worker"] and not {"--help", "-h"} & set(args):
        from .run_worker import main as worker_main

        sys.exit(worker_main(args[1:]))
    from .cli import cli

    cli(args, prog_name="aioq")


if __name__ == "__main__":
    main()
