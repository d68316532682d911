"""Reading the Lua: every script is a ``.lua`` file beside this module.

Two directives keep each thing said once:

* ``--#include NAME`` (a whole line) is replaced by ``NAME.lua``, once per script however many
  pieces include it (``queue.lua`` includes ``helpers.lua``; ``start.lua`` includes
  ``finish.lua``, which includes ``queue.lua``), so shared helpers live in one file.
* ``{{NAME}}`` is replaced by ``keys.LUA[NAME]`` or a value passed to ``source``: the key
  suffixes of ``keys.py`` (``{{KEY_JOB}}``), the number of priorities, the layout of the
  declared KEYS. An unknown name is an error, so a typo cannot reach Redis.
"""

from __future__ import annotations

import re
from importlib import resources

from ..keys import LUA

_INCLUDE = re.compile(r"^--#include (\w+)[ \t]*$", re.M)
_VALUE = re.compile(r"\{\{(\w+)\}\}")


def source(name: str, **values: object) -> str:
    """The full text of script ``name`` (``name.lua``), includes and values rendered."""
    seen: set[str] = set()
    table = {**LUA, **{k: str(v) for k, v in values.items()}}

    def render(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in table:
            raise KeyError(f"{name}.lua: no value for {{{{{key}}}}}")
        return table[key]

    return _VALUE.sub(render, _expand(name, seen))


def _expand(name: str, seen: set[str]) -> str:
    seen.add(name)
    text = resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")

    def include(match: re.Match[str]) -> str:
        piece = match.group(1)
        if piece in seen:
            return ""
        return _expand(piece, seen).rstrip("\n")

    return _INCLUDE.sub(include, text)
