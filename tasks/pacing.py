"""Bulk work paced beside readers: it works ``duty`` of the wall time and rests the rest.

The platform's own bulk work shares the cores, Redis and PostgreSQL with the readers it runs
beside: the warm-up of every member after a clear (tasks/warming.py, each worker process) and
the clear's SCAN + UNLINK steps (api_stub/management/clear.py, the API process's loop). After
each unit of work it rests (1/duty - 1) times what the unit took, so a duty of 0.25 keeps a
process busy a quarter of the time, however fast or slow the machine is.
"""

from __future__ import annotations

import time


class Pace:
    """How long to rest after each unit of work, working ``duty`` (0 < duty <= 1) of the
    time; 1.0 never rests."""

    def __init__(self, duty: float) -> None:
        if not 0 < duty <= 1:
            raise ValueError(f"a duty is a share of the time, 0 < duty <= 1: {duty!r}")
        self._factor = 1 / duty - 1
        self._mark = time.monotonic()

    def rest(self) -> float:
        """Seconds to rest now: the factor times the time since the last rest ended (the
        unit's work, whatever produced it)."""
        now = time.monotonic()
        seconds = (now - self._mark) * self._factor
        self._mark = now + seconds
        return seconds
