"""The write-behind branch of the cache's exception tree (see the package docstring)."""

from __future__ import annotations

from collections.abc import Iterable

from cache.errors import CacheError, CacheUnavailable


class Backpressure(CacheError):
    """The backlog is at its limit, or Redis is out of memory; nothing was recorded."""


class NotReplicated(CacheUnavailable):
    """Fewer replicas than required confirmed the events (WAIT), or the master had too few
    (the replica gate, NOREPLICAS). The caller is not told "accepted". ``recorded``: the
    master took the events anyway (WAIT fell short), so they may still be flushed, or be
    lost with that master if it fails now; False: nothing was recorded, a retry is safe."""

    def __init__(self, message: str, *, recorded: bool) -> None:
        self.recorded = recorded
        super().__init__(message)


class InvalidEvent(CacheError, ValueError):
    """An event that can never be recorded as given."""


class KeyReused(CacheError, ValueError):
    """An idempotency key already recorded a different request within its window."""


class Unwritable(CacheError):
    """Rows that can never be written: these members' rows, or, when none is named, some row
    of the batch (the flusher halves the batch to find the event)."""

    def __init__(self, member_ids: Iterable[int], reason: str) -> None:
        self.member_ids = frozenset(member_ids)
        super().__init__(reason)


class BatchOverlap(CacheError):
    """The database holds the batch up to ``applied_through``: only the rest is applied."""

    def __init__(self, applied_through: str) -> None:
        self.applied_through = applied_through
        super().__init__(f"batch overlaps entries applied through {applied_through}")
