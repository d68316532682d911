"""The aioq worker started through the API instead of the CLI (start-up comparison only).

    python api_worker.py --concurrency 100

What ``aioq worker bench_tasks:app`` does (aioq/cli.py ``worker`` and ``_serve``) without
typer: the difference in start-up between the two is the CLI framework's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from bench_tasks import app

from aioq import Worker


async def serve(concurrency: int) -> None:
    w = Worker(app, concurrency=concurrency)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, w.stop)
    try:
        await w.run()
    finally:
        await app.aclose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, default=100)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.concurrency))


if __name__ == "__main__":
    main()
