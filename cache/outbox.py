"""Invalidations that could not reach Redis, kept until they can be replayed.

A delete that fails while Redis is down must not be dropped: when Redis returns it may still
hold the old value. The service adds such keys here and replays them before its next
successful command. A key may carry the version of the write that invalidated it (a
write-through that failed): its replay then leaves a retired envelope at that version instead
of deleting the key (cache/scripts.py RETIRE), so a write or fill of an older version that is
still on its way cannot land after the replay. This in-process outbox is bounded; a durable
one (the database) can be plugged in through the same protocol.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Protocol

# A pending invalidation: the key, and the version of the write behind it (None: a delete).
Pending = tuple[str, int | None]


class Outbox(Protocol):
    def add(self, keys: Iterable[str], versions: Mapping[str, int] | None = None) -> None: ...

    def take(self, limit: int = 10_000) -> list[Pending]: ...

    def settle(self, taken: Iterable[Pending], *, applied: bool) -> None: ...

    def drain(self, limit: int = 10_000) -> list[str]: ...

    def drain_pending(self, limit: int = 10_000) -> list[Pending]: ...

    def restore_pending(self, pending: Iterable[Pending]) -> None: ...

    def __len__(self) -> int: ...


class MemoryOutbox:
    """Bounded, de-duplicated, thread-safe; the oldest keys are dropped past capacity. A key
    added twice keeps the highest version it was given.

    A replay takes a batch (:meth:`take`) and settles it when its commands are done
    (:meth:`settle`): taken keys stay counted (``len``: what still has to reach Redis, which
    a health check or a metric reads while a replay is on its way) but no other replay takes
    them. A key added again while its replay is on its way waits until that replay settles:
    a key is on its way in one replay at a time.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self.dropped = 0
        self._keys: OrderedDict[str, int | None] = OrderedDict()  # waiting, oldest first
        self._flying: dict[str, int | None] = {}  # taken by a replay on its way
        self._lock = threading.Lock()

    def add(self, keys: Iterable[str], versions: Mapping[str, int] | None = None) -> None:
        self.restore_pending((key, None if versions is None else versions.get(key)) for key in keys)

    def restore_pending(self, pending: Iterable[Pending]) -> None:
        with self._lock:
            self._wait(pending)

    def _wait(self, pending: Iterable[Pending]) -> None:
        for key, version in pending:
            known = self._keys.get(key)
            if known is not None and (version is None or version < known):
                version = known
            self._keys[key] = version
            self._keys.move_to_end(key)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
            self.dropped += 1

    def take(self, limit: int = 10_000) -> list[Pending]:
        """The oldest waiting keys, for one replay: counted still, taken by no other. A key
        whose earlier version is on its way waits for that replay to settle."""
        with self._lock:
            taken: list[Pending] = []
            later: list[Pending] = []
            while self._keys and len(taken) < limit:
                key, version = self._keys.popitem(last=False)
                if key in self._flying:
                    later.append((key, version))
                else:
                    self._flying[key] = version
                    taken.append((key, version))
            self._keys.update(later)
            return taken

    def settle(self, taken: Iterable[Pending], *, applied: bool) -> None:
        """A replay's batch is done: forgotten when ``applied``, else waiting again."""
        with self._lock:
            back = [(key, self._flying.pop(key, version)) for key, version in taken]
            if not applied:
                self._wait(back)

    def drain_pending(self, limit: int = 10_000) -> list[Pending]:
        """Remove and return the oldest keys, those on their way in a replay first."""
        with self._lock:
            taken = list(self._flying.items())[:limit]
            for key, _version in taken:
                del self._flying[key]
            while self._keys and len(taken) < limit:
                taken.append(self._keys.popitem(last=False))
            return taken

    def drain(self, limit: int = 10_000) -> list[str]:
        return [key for key, _version in self.drain_pending(limit)]

    def __len__(self) -> int:
        return len(self._keys) + len(self._flying)
