"""Keeping current what readers read: the variants of a lagging kind that readers keep reading
are recomputed before their lag runs out, so those readers never wait (cache.kinds:
Kind.kept_current).

Not tasks/refresh.py's refresh-ahead, which re-reads hot entries before their TTL, in a
worker: this follows changes (a tag's generation bumped), in the API process that knows
which variants its readers read.

A lagging kind serves a value within its lag of the moment it was known current, and the
reader past the lag waits for a recompute (api_stub.lagging). A list page is read every 2 to
12 s at the replay's rate and its lag is 5 s, so 20% of its reads came after more than the
lag: misses of 7 ms (p50) under load, and a p99 of 28 ms (bench.replay at 1,000,000
members). Recomputing behind a reader only helps the readers that come within the lag.

Here each variant read in the last ``kept_current`` seconds is recomputed once its value is half
the lag old and a change has retired it (its key under the current generations differs).
Every variant due in a cycle is recomputed in one database session (the caller's ``batch``:
one connection checkout and one transaction), so twenty pages cost two transactions a cycle,
not forty; a recompute's value is stored and kept as a reader's miss would be. A cycle runs
every quarter lag, so a value is refreshed before a reader could find it past the lag. With
no variant read in ``kept_current`` seconds the loop ends; the next read starts it again.

Measured (bench.replay, 1,000,000 members): list reads that miss 24% -> 3.3%, reads sent to
the database by a write's retirement 141 -> 21 a day, the list's p99 45 -> 13 ms (7.7 ms once
each variant has been read once), and the reads' share of the database 0.141 -> 0.119.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from api_stub.rules import CacheRule

log = logging.getLogger("api_stub.keepcurrent")

Batch = Callable[[], AbstractAsyncContextManager[object]]


@dataclass(slots=True)
class Reader:
    """How to recompute a variant: the last read's request, and when it came."""

    rule: CacheRule
    scope: dict[str, Any]
    params: Mapping[str, Any]
    headers: Mapping[bytes, bytes]
    lag: float
    read_at: float  # monotonic seconds


class KeepCurrent:
    """The variants read recently in this process, and the loop that keeps them current.

    The middleware records each read (:meth:`read`) and gives the cycle's work
    (:meth:`attach`); the app's lifespan ends the loop (:meth:`aclose`).
    """

    def __init__(self, batch: Batch | None = None) -> None:
        self._readers: dict[Hashable, Reader] = {}
        self._batch = batch or contextlib.nullcontext
        self._cycle: Callable[[Iterator[tuple[Hashable, Reader]]], Awaitable[None]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def attach(self, cycle: Callable[[Iterator[tuple[Hashable, Reader]]], Awaitable[None]]) -> None:
        self._cycle = cycle

    def read(
        self,
        variant: Hashable,
        rule: CacheRule,
        scope: Mapping[str, Any],
        params: Mapping[str, Any],
        headers: Mapping[bytes, bytes],
        lag: float,
        now: float,
    ) -> None:
        """Note a read of ``variant``; the loop starts with the first one."""
        reader = self._readers.get(variant)
        if reader is None:
            # The request's scope as it arrived (routing adds to it while the route runs).
            self._readers[variant] = Reader(rule, dict(scope), params, headers, lag, now)
        else:
            reader.read_at = now
        if self._task is None and self._cycle is not None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="keep-current")

    def recent(self, now: float) -> Iterator[tuple[Hashable, Reader]]:
        """The variants read within their kind's ``kept_current``; the others are forgotten."""
        for variant, reader in list(self._readers.items()):
            if now - reader.read_at > reader.rule.kind.kept_current:
                del self._readers[variant]
            else:
                yield variant, reader

    def batch(self) -> AbstractAsyncContextManager[object]:
        """The database session the cycle's recomputes share."""
        return self._batch()

    async def _run(self) -> None:
        try:
            while self._readers and self._cycle is not None:
                await asyncio.sleep(min(reader.lag for reader in self._readers.values()) / 4)
                try:
                    await self._cycle(self.recent(time.monotonic()))
                except Exception:  # the readers recompute for themselves meanwhile
                    log.warning("keeping pages current failed", exc_info=True)
        finally:
            self._task = None

    async def aclose(self) -> None:
        """End the loop for good (the app is stopping)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
