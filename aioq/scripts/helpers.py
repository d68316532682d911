"""The Lua helpers every script may include (``helpers.lua``): ``tag_of``, ``level_of``,
``now_ms``, ``field``; and the queue's declared keys (``queue.lua``)."""

from .lua import source

_HELPERS = source("helpers")
