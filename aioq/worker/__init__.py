"""The worker: fetch (``fetch.py``), run (``run.py``), complete (``complete.py``), leases
(``lease.py``), scheduled jobs (``schedule.py``), tied together by ``Worker`` (``core.py``)."""

from .core import Worker

__all__ = ["Worker"]
