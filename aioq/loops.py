"""The event loop a worker runs in: asyncio's own, or uvloop (``aioq worker --loop``).

``asyncio`` is the default, so a worker runs on the same loop on every machine whatever else
is installed (``uvicorn[standard]``, for one, pulls uvloop in); ``uvloop`` asks for it and
fails if it is missing; ``auto`` takes uvloop when it imports and asyncio's loop otherwise.
The worker's start-up line says which loop it got (``loop_name``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

LOOPS = ("asyncio", "uvloop", "auto")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class MissingUvloop(ImportError):
    """``--loop uvloop`` where uvloop is not installed; the message says how to get it."""


def loop_factory(choice: str) -> LoopFactory | None:
    """The factory of the loop ``choice`` names, for ``asyncio.Runner``; None is asyncio's
    default loop. ``ValueError`` for an unknown name, ``MissingUvloop`` for uvloop missing."""
    if choice not in LOOPS:
        raise ValueError(f"unknown loop {choice!r} (use asyncio, uvloop or auto)")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "auto":
            return None
        raise MissingUvloop(
            "--loop uvloop needs uvloop: pip install 'aioq-redis[uvloop]'"
        ) from None
    return uvloop.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """ "uvloop" for a uvloop loop, else "asyncio" (its own loop, or another policy's)."""
    return "uvloop" if type(loop).__module__.partition(".")[0] == "uvloop" else "asyncio"
