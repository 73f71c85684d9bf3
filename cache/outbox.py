"""Invalidations that could not reach Redis, kept until they can be replayed.

A delete that fails while Redis is down must not be dropped: when Redis returns it may still
hold the old value. The service adds such keys here and replays them before its next
successful command. This in-process outbox is bounded; a durable one (the database) can be
plugged in through the same protocol.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol


class Outbox(Protocol):
    def add(self, keys: Iterable[str]) -> None: ...

    def drain(self, limit: int = 10_000) -> list[str]: ...

    def restore(self, keys: Iterable[str]) -> None: ...

    def __len__(self) -> int: ...


class MemoryOutbox:
    """Bounded, de-duplicated, thread-safe; the oldest keys are dropped past capacity."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self.dropped = 0
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._keys[key] = None
                self._keys.move_to_end(key)
            while len(self._keys) > self.capacity:
                self._keys.popitem(last=False)
                self.dropped += 1

    def drain(self, limit: int = 10_000) -> list[str]:
        with self._lock:
            taken: list[str] = []
            while self._keys and len(taken) < limit:
                taken.append(self._keys.popitem(last=False)[0])
            return taken

    def restore(self, keys: Iterable[str]) -> None:
        self.add(keys)

    def __len__(self) -> int:
        return len(self._keys)
