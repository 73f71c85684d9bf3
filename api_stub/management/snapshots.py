"""The newest metrics snapshot as the management routes read it: from the database at most
once per :data:`MAX_AGE_S` per process.

A snapshot is stored once a minute (tasks/metrics.py), while the dashboard polls
``/api/v1/cache/metrics`` every few seconds and load balancers poll ``/health``: without this,
every poll was a database transaction, which a replay of a day's traffic counted against the
cache. Absence is not kept (the first snapshot shows on the next poll), nor is a failed read.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Final

from api_stub.runtime import Database
from db import reports
from db.errors import DataError

MAX_AGE_S: Final = 10.0  # well inside the snapshot period (a minute)


@dataclass
class LatestSnapshot:
    db: Database
    max_age_s: float = MAX_AGE_S
    _value: dict[str, Any] | None = field(default=None, init=False, repr=False)
    _read_at: float = field(default=float("-inf"), init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    async def get(self) -> dict[str, Any] | None:
        """The newest stored snapshot, at most ``max_age_s`` old as read; None when there is
        none yet or the database does not answer."""
        async with self._lock:  # concurrent polls share one read
            if self._value is not None and time.monotonic() - self._read_at < self.max_age_s:
                return self._value
            try:
                value = await self.db.read(reports.latest_snapshot)
            except DataError:
                return self._value  # the last one read, if any: the figures say its age
            if value is not None:
                self._value, self._read_at = value, time.monotonic()
            return value
