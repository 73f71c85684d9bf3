"""In-process cache metrics: plain counters per data type, no Redis round trip to record.

Increments are attribute additions under the GIL; a lost update under heavy threading skews a
counter by one, which metrics tolerate and the hot path cannot afford a lock for. A snapshot
is a plain dict, published elsewhere (Redis per interval, PostgreSQL by a beat job,
Prometheus text by the API).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Mapping
from typing import Any

from cache.types import DataType

# Load durations in seconds; upper bounds of the histogram buckets (the last is +Inf).
LOAD_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LOAD_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-th observation (0 when empty)."""
        if not self.count:
            return 0.0
        rank, seen = q * self.count, 0
        for index, bucket in enumerate(self.counts):
            seen += bucket
            if seen >= rank:
                return self.bounds[index] if index < len(self.bounds) else float("inf")
        return float("inf")

    def snapshot(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum": round(self.total, 6),
            "buckets": dict(zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True)),
            "p50": self.quantile(0.5),
            "p95": self.quantile(0.95),
            "p99": self.quantile(0.99),
        }


# The integer counters of TypeCounters, in display order: what processes publish and
# snapshots, health and metrics endpoints sum.
COUNTER_NAMES: tuple[str, ...] = (
    "hits",
    "stale",
    "negative_hits",
    "misses",
    "loads",
    "load_errors",
    "declined",
    "errors",
    "writes",
    "writes_rejected",
    "skipped_writes",
    "early_refreshes",
    "lease_waits",
)


def rates(totals: Mapping[str, float]) -> dict[str, Any]:
    """Hit rate (served / lookups) and error rate (errors / operations) of summed counters."""
    served = totals.get("hits", 0) + totals.get("stale", 0) + totals.get("negative_hits", 0)
    lookups = served + totals.get("misses", 0)
    operations = lookups + totals.get("writes", 0) + totals.get("loads", 0)
    errors = totals.get("errors", 0) + totals.get("load_errors", 0)
    return {
        "lookups": lookups,
        "hit_rate": round(served / lookups, 6) if lookups else None,
        "error_rate": round(errors / operations, 6) if operations else None,
    }


class TypeCounters:
    __slots__ = (
        "declined",
        "early_refreshes",
        "errors",
        "hits",
        "lease_waits",
        "load_errors",
        "load_seconds",
        "loads",
        "misses",
        "negative_hits",
        "skipped_writes",
        "stale",
        "writes",
        "writes_rejected",
    )

    def __init__(self) -> None:
        self.hits = 0  # fresh values served
        self.stale = 0  # stale values served while another caller refreshes
        self.negative_hits = 0  # cached "not found" served
        self.misses = 0
        self.loads = 0  # loader calls
        self.load_errors = 0  # loaders that failed (the database, a bug)
        self.declined = 0  # loaders the source refused for the caller (a 404, a 422)
        self.load_seconds = Histogram()
        self.early_refreshes = 0  # XFetch recomputations before expiry
        self.lease_waits = 0  # callers that waited for another process's load
        self.writes = 0
        self.writes_rejected = 0  # version guard or lost lease refused a fill
        self.skipped_writes = 0  # cache disabled or Redis unavailable
        self.errors = 0  # Redis errors and corrupt entries

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = value.snapshot() if isinstance(value, Histogram) else value
        served = self.hits + self.stale + self.negative_hits
        lookups = served + self.misses
        out["hit_rate"] = round(served / lookups, 6) if lookups else None
        return out


class NearCounters:
    """The near tier's figures (cache/near.py): counters, plus ``bytes`` and ``entries`` as
    gauges of what it holds now."""

    __slots__ = (
        "bytes",
        "entries",
        "evictions",
        "flushes",
        "hits",
        "invalidations",
        "misses",
        "refused",
    )

    def __init__(self) -> None:
        self.hits = 0  # served from process memory
        self.misses = 0  # looked up, not held (or stale, or tracking down): Redis was read
        self.evictions = 0  # dropped to stay within the byte budget
        self.invalidations = 0  # keys named by Redis invalidation pushes
        self.flushes = 0  # everything dropped: tracking lost or reconnected, FLUSHDB
        self.refused = 0  # reads not kept: invalidated (or flushed) while in flight
        self.bytes = 0  # estimated bytes held
        self.entries = 0

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


# The near tier's counters (not gauges), as published and summed.
NEAR_COUNTER_NAMES: tuple[str, ...] = (
    "hits",
    "misses",
    "evictions",
    "invalidations",
    "flushes",
    "refused",
)


class CacheMetrics:
    def __init__(self) -> None:
        self.started_at = time.time()
        self.by_type: dict[DataType, TypeCounters] = {dt: TypeCounters() for dt in DataType}
        self.breaker_skips = 0  # calls that skipped Redis because the breaker was open
        self.outbox_replayed = 0
        self.near = NearCounters()

    def of(self, data_type: DataType) -> TypeCounters:
        return self.by_type[data_type]

    def snapshot(self) -> dict[str, Any]:
        per_type = {dt.value: counters.snapshot() for dt, counters in self.by_type.items()}
        totals = {name: sum(t[name] for t in per_type.values()) for name in COUNTER_NAMES}
        served = totals["hits"] + totals["stale"] + totals["negative_hits"]
        lookups = served + totals["misses"]
        totals["hit_rate"] = round(served / lookups, 6) if lookups else None
        return {
            "started_at": self.started_at,
            "taken_at": time.time(),
            "total": totals,
            "by_type": per_type,
            "breaker_skips": self.breaker_skips,
            "outbox_replayed": self.outbox_replayed,
            "near": self.near.snapshot(),
        }
