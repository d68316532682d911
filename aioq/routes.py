"""Routing: ``App(routes={"emails.*": "emails", "reports.build": "slow"})``, Celery's
``task_routes``. A task registered without a queue, and a task enqueued by a name the app does
not know, goes to the queue of the first pattern (in the mapping's order) that its name
matches; with none, to the app's default queue. An explicit queue (``@app.task(queue=...)``,
``options(queue=...)``) always wins.

Patterns are shell-style, as ``fnmatch.fnmatchcase`` reads them, and match the whole name,
case-sensitively: ``*`` any run of characters (dots too: ``emails.*`` matches
``emails.send.bulk``), ``?`` one character, ``[abc]`` one of those, ``[!abc]`` any other. A
pattern without them is an exact name. Regular-expression syntax is refused, not taken
literally, since a route that can never match is a silent misrouting: ``App()`` raises
``ValueError`` naming the pattern for ``^ $ ( ) + { } | \\``, an unclosed ``[``, an empty
pattern, and for a queue that is not a valid queue name.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping

from .keys import validate_name

_REGEX_ONLY = set("^$()+{}|\\")


class Routes:
    """The app's routes, checked and compiled once; ``queue_for(name)`` is a lookup."""

    __slots__ = ("_compiled", "table")

    def __init__(self, routes: Mapping[str, str] | None) -> None:
        if routes is None:
            routes = {}
        if not isinstance(routes, Mapping):
            raise TypeError(
                f"routes must be a mapping of task-name pattern -> queue, got {routes!r}"
            )
        compiled: list[tuple[re.Pattern[str], str]] = []
        for pattern, queue in routes.items():
            check_pattern(pattern)
            if not isinstance(queue, str):
                raise TypeError(
                    f"route {pattern!r}: the queue must be a queue name (str), got {queue!r}"
                )
            try:
                validate_name("queue", queue)
            except ValueError as exc:
                raise ValueError(f"route {pattern!r}: {exc}") from None
            compiled.append((re.compile(fnmatch.translate(pattern)), queue))
        self.table: dict[str, str] = dict(routes)
        self._compiled = tuple(compiled)

    def __bool__(self) -> bool:
        return bool(self._compiled)

    @property
    def queues(self) -> set[str]:
        """Every queue a route leads to."""
        return set(self.table.values())

    def queue_for(self, task: str) -> str | None:
        """The queue of the first route matching ``task``; ``None`` when none does."""
        for pattern, queue in self._compiled:
            if pattern.match(task):
                return queue
        return None


def check_pattern(pattern: object) -> str:
    """A route's pattern, or a ``ValueError``/``TypeError`` naming it and what is wrong."""
    if not isinstance(pattern, str):
        raise TypeError(f"route pattern must be a str, got {pattern!r}")
    if not pattern:
        raise ValueError("route pattern must not be empty")
    bad = sorted(set(pattern) & _REGEX_ONLY)
    if bad:
        raise ValueError(
            f"route pattern {pattern!r} uses {''.join(bad)!r}: patterns are shell-style "
            "(* ? [abc] [!abc], as fnmatch), not regular expressions"
        )
    i = pattern.find("[")
    while i >= 0:  # as fnmatch reads a set: "[!" negates, a "]" first is a member
        j = i + 1 + (pattern[i + 1 : i + 2] == "!")
        j += pattern[j : j + 1] == "]"
        end = pattern.find("]", j)
        if end < 0:
            raise ValueError(f"route pattern {pattern!r} has a '[' that is never closed")
        i = pattern.find("[", end + 1)
    return pattern
