"""``python -m aioq`` and the ``aioq`` script (``aioq.__main__:main``): see ``aioq/cli/``."""

from __future__ import annotations

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
