"""Cache counters across processes and over time: what a snapshot stores, and what a window
of snapshots adds up to.

Counters are cumulative per process run, so two things are computed here, as pure functions:

- :func:`compact` and :func:`merge`: the processes' published documents
  (workers/publisher.py) reduced to their counters, and summed into the snapshot's totals.
- :class:`Window`: the increase of every counter over [start, end), from the last snapshot
  before the window (the baseline) and the snapshots in it. Each process run
  (process id + started_at) counts from its baseline value, or from zero when it started
  inside the window; a run that ended inside the window keeps what it counted until its last
  publication. The same is done for Redis's own counters per server run (run_id), so a restart
  never yields a negative rate.
- :func:`latency_interval`: the request latency histograms the API processes publish
  (api_stub/management/latency.py: cumulative bucket counts per kind, cached vs uncached, per
  recorder run), turned into what was served between the previous snapshot and this one,
  merged over the processes, with p50/p95/p99 per kind and outcome. A run counts from its
  counts in the previous snapshot, or from zero when it started after it; a run that was
  already going but missing from the previous snapshot has no baseline and waits for the next
  interval (counting it from zero would mix its whole past into one interval).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from cache.metrics import COUNTER_NAMES, Histogram, rates

COUNTERS: Final = COUNTER_NAMES  # cache.metrics: the one list of them
# Redis INFO counters that only grow during a server run.
REDIS_COUNTERS: Final = (
    "keyspace_hits",
    "keyspace_misses",
    "evicted_keys",
    "expired_keys",
    "total_commands_processed",
    "rejected_connections",
)

QUANTILES: Final = {"p50": 0.5, "p95": 0.95, "p99": 0.99}

Flat = dict[str, float]
Rated = dict[str, float | None]
Add = Callable[[str, Flat], None]


def compact(document: Mapping[str, Any]) -> dict[str, Any]:
    """One process's published document reduced to what a snapshot row keeps."""
    snapshot = document.get("snapshot") or {}
    by_type = {
        name: {counter: int(values.get(counter, 0)) for counter in COUNTERS}
        for name, values in (snapshot.get("by_type") or {}).items()
    }
    return {
        "role": document.get("role"),
        "started_at": snapshot.get("started_at"),
        "published_at": document.get("published_at"),
        "by_type": by_type,
        "breaker": (snapshot.get("breaker") or {}).get("state"),
        "breaker_skips": int(snapshot.get("breaker_skips", 0)),
        "outbox_pending": int(snapshot.get("outbox_pending", 0)),
        "lifetimes": document.get("lifetimes") or {},
        "latency": document.get("latency") or {},
    }


def merge(processes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Sum of the compacted processes: per type, overall, with rates."""
    by_type: dict[str, dict[str, float]] = {}
    for process in processes.values():
        for name, values in process.get("by_type", {}).items():
            row = by_type.setdefault(name, dict.fromkeys(COUNTERS, 0))
            for counter in COUNTERS:
                row[counter] += values.get(counter, 0)
    total = {counter: sum(row[counter] for row in by_type.values()) for counter in COUNTERS}
    return {
        "processes": len(processes),
        "total": {**total, **rates(total)},
        "by_type": {name: {**row, **rates(row)} for name, row in sorted(by_type.items())},
    }


def flatten(process: Mapping[str, Any]) -> Flat:
    """A compacted process's counters as ``type.counter`` and ``lifetimes.type.field`` keys."""
    flat: Flat = {}
    for name, values in process.get("by_type", {}).items():
        for counter in COUNTERS:
            flat[f"{name}.{counter}"] = float(values.get(counter, 0))
    for name, row in (process.get("lifetimes") or {}).items():
        flat[f"lifetimes.{name}.invalidated"] = float(row.get("invalidated", 0))
        flat[f"lifetimes.{name}.age_sum"] = float(row.get("age_sum", 0.0))
        for index, count in enumerate(row.get("buckets", [])):
            flat[f"lifetimes.{name}.bucket.{index}"] = float(count)
    return flat


class _Runs:
    """First and last value of every counter of every run of something that restarts."""

    def __init__(self) -> None:
        self.base: dict[str, Flat] = {}
        self.last: dict[str, Flat] = {}

    def baseline(self, run: str, values: Flat) -> None:
        self.base[run] = values
        self.last[run] = values

    def observe(self, run: str, values: Flat) -> None:
        self.base.setdefault(run, {})  # a run first seen in the window counts from zero
        self.last[run] = values

    def increase(self) -> Flat:
        out: Flat = {}
        for run, last in self.last.items():
            base = self.base.get(run, {})
            for name, value in last.items():
                # max(): a counter never shrinks within a run; guard against clock or data skew.
                out[name] = out.get(name, 0.0) + max(0.0, value - base.get(name, 0.0))
        return out


class Window:
    """Folds a baseline and the snapshots of a window into counter increases."""

    def __init__(self) -> None:
        self.cache = _Runs()
        self.redis = _Runs()
        self.snapshots = 0
        self.first_taken_at: str | None = None
        self.last_taken_at: str | None = None

    def _each(self, payload: Mapping[str, Any], add: Add, redis_add: Add) -> None:
        for process, counters in (payload.get("processes") or {}).items():
            add(f"{process}@{counters.get('started_at')}", flatten(counters))
        info = payload.get("redis") or {}
        if info.get("run_id"):
            values = {name: float(info[name]) for name in REDIS_COUNTERS if name in info}
            redis_add(str(info["run_id"]), values)

    def fold(
        self, baseline: Mapping[str, Any] | None, snapshots: Iterable[Mapping[str, Any]]
    ) -> Window:
        if baseline is not None:
            self._each(baseline["payload"], self.cache.baseline, self.redis.baseline)
        for row in snapshots:
            payload = row["payload"]
            if baseline is None and not self.snapshots:
                # No history before the window: its first snapshot is the baseline.
                self._each(payload, self.cache.baseline, self.redis.baseline)
            else:
                self._each(payload, self.cache.observe, self.redis.observe)
            self.snapshots += 1
            self.first_taken_at = self.first_taken_at or row.get("taken_at")
            self.last_taken_at = row.get("taken_at")
        return self

    def _increases(self) -> dict[str, Flat]:
        out: dict[str, Flat] = {}
        for name, value in self.cache.increase().items():
            data_type, _, counter = name.partition(".")
            if data_type != "lifetimes":
                out.setdefault(data_type, dict.fromkeys(COUNTERS, 0.0))[counter] = value
        return out

    def by_type(self) -> dict[str, Rated]:
        """Counter increases per data type, with rates."""
        return {name: {**row, **rates(row)} for name, row in sorted(self._increases().items())}

    def total(self) -> Rated:
        rows = self._increases().values()
        total = {counter: sum(row[counter] for row in rows) for counter in COUNTERS}
        return {**total, **rates(total)}

    def lifetimes(self) -> dict[str, dict[str, Any]]:
        """Invalidations, mean age and age buckets per data type, over the window."""
        out: dict[str, dict[str, Any]] = {}
        for name, value in self.cache.increase().items():
            head, _, rest = name.partition(".")
            if head != "lifetimes":
                continue
            data_type, _, field = rest.partition(".")
            row = out.setdefault(data_type, {"invalidated": 0.0, "age_sum": 0.0, "buckets": {}})
            if field.startswith("bucket."):
                row["buckets"][int(field.split(".", 1)[1])] = value
            else:
                row[field] = value
        for row in out.values():
            size = max(row["buckets"], default=-1) + 1
            row["buckets"] = [int(row["buckets"].get(i, 0)) for i in range(size)]
            row["invalidated"] = int(row["invalidated"])
            row["mean_age"] = row["age_sum"] / row["invalidated"] if row["invalidated"] else None
        return out

    def redis_increase(self) -> dict[str, float]:
        return self.redis.increase()


# --- request latency per kind ----------------------------------------------------------------
def histogram_of(bounds: tuple[float, ...], counts: list[int], total: float) -> Histogram:
    """A histogram holding ``counts`` (one per bucket, the last +Inf): its quantiles are those
    of cache.metrics.Histogram, the one definition of them."""
    histogram = Histogram(bounds)
    histogram.counts = list(counts)
    histogram.count = sum(counts)
    histogram.total = total
    return histogram


def _run_counts(latency: Mapping[str, Any]) -> dict[tuple[str, str], tuple[list[int], float]]:
    return {
        (kind, outcome): ([int(c) for c in row.get("counts", [])], float(row.get("sum", 0.0)))
        for kind, outcomes in (latency.get("kinds") or {}).items()
        for outcome, row in outcomes.items()
    }


def latency_interval(
    previous: Mapping[str, Any] | None, processes: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Request latency served between ``previous`` (the last stored snapshot's payload, None
    when there is none: every run counts since it started) and now, by kind and outcome.

    ``processes`` are this snapshot's compacted processes (their ``latency`` as published).
    The answer: ``{"since", "bounds", "processes", "kinds": {kind: {outcome: {"count", "sum",
    "buckets", "p50", "p95", "p99"}}}}``, an outcome only when it had requests (stored as
    JSONB: readers must not rely on the order of the kinds); a quantile in the +Inf bucket is
    None (above the largest bound).
    """
    since = (previous or {}).get("taken_at")
    since_s = _epoch(since)
    before = (previous or {}).get("processes") or {}
    bounds: tuple[float, ...] | None = None
    merged: dict[tuple[str, str], tuple[list[int], float]] = {}
    counted = 0
    for name, process in processes.items():
        latency = process.get("latency") or {}
        started = latency.get("started_at")
        if not latency.get("kinds") or started is None:
            continue
        own = tuple(float(b) for b in latency.get("bounds", ()))
        if bounds is None:
            bounds = own
        elif own != bounds:
            continue  # another release's buckets: not addable to these
        old = (before.get(name) or {}).get("latency") or {}
        if old.get("started_at") == started and tuple(old.get("bounds", ())) == bounds:
            base = _run_counts(old)
        elif previous is None or (since_s is not None and float(started) >= since_s):
            base = {}  # started after the previous snapshot (or there is none): from zero
        else:
            continue  # running before the previous snapshot but not in it: no baseline
        counted += 1
        for key, (counts, total) in _run_counts(latency).items():
            base_counts, base_total = base.get(key, ([], 0.0))
            into, into_total = merged.setdefault(key, ([0] * (len(bounds) + 1), 0.0))
            for index, count in enumerate(counts[: len(into)]):
                old_count = base_counts[index] if index < len(base_counts) else 0
                # A bucket never shrinks within a run; max() guards against skewed data.
                into[index] += max(0, count - old_count)
            merged[key] = (into, into_total + max(0.0, total - base_total))
    kinds: dict[str, dict[str, Any]] = {}
    for (kind, outcome), (counts, total) in sorted(merged.items()):
        if not any(counts) or bounds is None:
            continue
        histogram = histogram_of(bounds, counts, total)
        kinds.setdefault(kind, {})[outcome] = {
            "count": histogram.count,
            "sum": round(total, 6),
            "buckets": counts,
            **{name: _finite(histogram.quantile(q)) for name, q in QUANTILES.items()},
        }
    return {
        "since": since,
        "bounds": list(bounds or ()),
        "processes": counted,
        "kinds": kinds,
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _epoch(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return dt.datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None
