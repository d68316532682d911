"""Tables for people and for ``grep``: ids, entry ids and task names are never wrapped or cut.

A copied job id that lost its second half, or a ``grep no_such_task`` that finds nothing
because the terminal was 80 columns wide, is worse than a wide table. So every column is
``no_wrap`` and at least as wide as its longest cell except the free-text ones (reasons,
errors), which wrap; when even that does not fit the terminal, the table is drawn wider than
the terminal (which then wraps the line, not the id). When stdout is not a terminal (a pipe, a
file) the table is as wide as its rows: one row per line, whatever ``COLUMNS`` says.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rich.console import Console

WRAP_MIN = 20  # columns a wrapping column keeps before the table outgrows the terminal
UNBOUNDED = 1_000_000  # the width of "no limit" for output that is not a terminal


@dataclass(frozen=True, slots=True)
class Column:
    """A table column; ``wrap`` only for free text (reasons, errors), never for ids."""

    name: str
    wrap: bool = False
    justify: Literal["left", "right"] = "left"


def console(min_width: int = 0) -> Console:
    """A console for stdout, at least ``min_width`` wide; unbounded when stdout is not a
    terminal (so nothing wraps in a pipe)."""
    from rich.console import Console

    out = Console()
    if not out.is_terminal:
        return Console(width=UNBOUNDED)
    return out if out.width >= min_width else Console(width=min_width)


def print_table(
    title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]], out: Console | None = None
) -> None:
    """Print ``rows`` under ``columns``; a table with no rows prints its title and header."""
    from rich.cells import cell_len
    from rich.table import Table

    table = Table(title=title, min_width=cell_len(title))  # nor is the title wrapped
    needed = 1  # the left border; each column adds its padding (2) and a border (1)
    for i, column in enumerate(columns):
        widest = max([cell_len(column.name), *(cell_len(row[i]) for row in rows)])
        if column.wrap:
            table.add_column(column.name, justify=column.justify, overflow="fold")
            needed += min(widest, WRAP_MIN) + 3
        else:  # at its full width: the table grows rather than cutting an id
            table.add_column(
                column.name, justify=column.justify, no_wrap=True, overflow="ignore",
                min_width=widest,
            )  # fmt: skip
            needed += widest + 3
    for row in rows:
        table.add_row(*row)
    (out or console(max(needed, cell_len(title)))).print(table)


def print_fields(
    title: str, rows: Sequence[tuple[str, str]], whole: Collection[str], out: Console | None = None
) -> Console:
    """Print ``(field, value)`` rows; values of the fields named in ``whole`` (ids, task
    names) are never cut, the others (arguments, results, errors) may wrap. Returns the
    console, for what follows the table."""
    from rich.cells import cell_len
    from rich.table import Table

    names = max((cell_len(name) for name, _ in rows), default=0)
    values = max([0, *(cell_len(value) for name, value in rows if name in whole)])
    table = Table(title=title, show_header=False, min_width=cell_len(title))
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold", min_width=values)
    for name, value in rows:
        table.add_row(name, value)
    out = out or console(max(names + values + 7, cell_len(title)))
    out.print(table)
    return out


def when(value: datetime | None, short: bool = False) -> str:
    """A UTC time; ``short`` drops the year."""
    fmt = "%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S UTC"
    return value.astimezone(UTC).strftime(fmt) if value else "-"


def first_line(text: str | None, width: int = 60) -> str:
    """The first line of ``text``, cut to ``width`` (for an error in a listing)."""
    line = text.strip().splitlines()[0] if text and text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
