"""What every ``aioq`` command starts from: the MODULE:APP it names, and the queues it asks for.

Mistakes here are the user's to fix, so they are ``CliError``: one line, exit code 2. Nothing
here imports the CLI framework (``aioq worker`` uses it too).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from ..app import App


class CliError(Exception):
    """A mistake the user can fix: printed as one line, exit code 2."""


def load_app(target: str) -> App:
    """Import ``module:attribute`` (the current directory is importable) and check it."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise CliError(f"expected MODULE:APP (e.g. myproject.tasks:app), got {target!r}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise CliError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise CliError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(app, App):
        raise CliError(f"{target} is a {type(app).__name__}, not an aioq.App")
    return app


def known_queues(app: App, queues: Sequence[str] | None) -> list[str]:
    """The queues asked for, without repeats (default: every queue the app knows); an unknown
    name is a ``CliError`` naming it and the app's queues."""
    if not queues:
        return app.queues
    unknown = [q for q in queues if q not in app.queues]
    if unknown:
        raise CliError(
            f"unknown queue(s) {', '.join(map(repr, unknown))}: app {app.name!r} "
            f"has {', '.join(map(repr, app.queues))}"
        )
    return list(dict.fromkeys(queues))
