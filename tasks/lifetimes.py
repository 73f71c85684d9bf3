"""How long cached entries lived before an invalidation removed them, per data type.

The weekly TTL review needs, beside hit rates, how often entries are invalidated and at what
age: an entry invalidated after a median of two minutes under a one-hour TTL says something
different from one that always reaches its expiry. Invalidation tasks read the 32-byte
envelope header of each key before deleting it (``GETRANGE 0 31``, pipelined: one round trip
for the whole batch, never the value) and record the age here. The counters are per process
and cumulative, published with the cache counters (workers/publisher.py).
"""

from __future__ import annotations

import bisect
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final

from cache import CacheService, DataType, Keys
from cache.codec import HEADER_SIZE, MAGIC
from cache.ops import UNAVAILABLE

# Upper bounds of the age buckets, in seconds (the last bucket is everything above).
AGE_BUCKETS: Final = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86_400, 7 * 86_400)
# codec.py's header: magic, format, schema, flags, then created_at as a big-endian double.
_CREATED_AT: Final = struct.Struct(">d")
_CREATED_AT_OFFSET: Final = 4


def created_at(header: bytes | None) -> float | None:
    """The created-at of an envelope header, or None for a missing key or foreign bytes."""
    if not header or len(header) < HEADER_SIZE or header[0] != MAGIC:
        return None
    return float(_CREATED_AT.unpack_from(header, _CREATED_AT_OFFSET)[0])


def data_type_of(keys: Keys, key: str) -> DataType | None:
    """The data type a cache key was built for (Keys.entry layout), None for other keys."""
    if not keys.owns(key):
        return None
    head = key[len(keys.prefix) :].split(":", 1)[0]
    try:
        return DataType(head)
    except ValueError:
        return None


class Lifetimes:
    """Invalidations and ages at invalidation, per data type; thread-safe, cheap to record."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, Any]] = {}

    def record(self, data_type: DataType, age: float) -> None:
        with self._lock:
            row = self._counts.setdefault(
                data_type.value,
                {"invalidated": 0, "age_sum": 0.0, "buckets": [0] * (len(AGE_BUCKETS) + 1)},
            )
            row["invalidated"] += 1
            row["age_sum"] += age
            row["buckets"][bisect.bisect_left(AGE_BUCKETS, age)] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                name: {**row, "buckets": list(row["buckets"]), "age_sum": round(row["age_sum"], 3)}
                for name, row in self._counts.items()
            }


def read_ages(cache: CacheService, keys: Sequence[str]) -> list[float | None]:
    """The age of each key's entry now (None: missing or not an envelope); one round trip.

    Best effort: a Redis error yields None for every key (the invalidation itself decides
    whether to retry).
    """
    if not keys:
        return []
    pipe = cache.clients.writer.pipeline(transaction=False)
    for key in keys:
        pipe.getrange(key, 0, HEADER_SIZE - 1)
    headers = cache.run(pipe.execute)  # behind the breaker, like every cache read
    if headers is UNAVAILABLE:
        return [None] * len(keys)
    now = time.time()
    ages: list[float | None] = []
    for header in headers:
        made = created_at(header)
        ages.append(None if made is None else max(0.0, now - made))
    return ages


def record_invalidations(
    lifetimes: Lifetimes, keys: Keys, invalidated: Iterable[str], ages: Iterable[float | None]
) -> int:
    """Record the keys that held an entry; how many did."""
    recorded = 0
    for key, age in zip(invalidated, ages, strict=True):
        data_type = data_type_of(keys, key)
        if data_type is not None and age is not None:
            lifetimes.record(data_type, age)
            recorded += 1
    return recorded


def median_age(buckets: Sequence[int]) -> float | None:
    """Upper bound of the bucket holding the median (None when empty; inf above the last)."""
    total = sum(buckets)
    if not total:
        return None
    seen = 0
    for index, count in enumerate(buckets):
        seen += count
        if seen * 2 >= total:
            return float(AGE_BUCKETS[index]) if index < len(AGE_BUCKETS) else float("inf")
    return float("inf")
