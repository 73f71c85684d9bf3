"""Warm-up logic: read from a Source in batches, write to the cache in pipelined batches.

Plain functions over a CacheService and a Source, with no Celery in sight: the tasks in
tasks/warmup.py only call them and relay progress. Every batch is one read (one query) and
one write (``CacheService.set_many``: one pipelined round trip), so a warm-up costs
``2 * members / batch_size`` round trips, not one per key.

A batch that Redis refuses raises CacheUnavailable (the task retries); re-running a warm-up
is harmless, it writes the same values again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cache import CacheService, DataType
from cache.errors import CacheUnavailable
from tasks.sources import ANALYTICS_NAMES, LOOKUP_NAMES, STATISTICS_NAMES, Member, Source

BATCH_SIZE: Final = 5_000  # members per query and per pipeline: ~1-2 MB of values
HOTTEST: Final = 1_000  # members warmed by warmup_critical

# Reports progress as (done, total); called once per batch, never per key.
Progress = Callable[[int, int], None]

AGGREGATES: Final[Mapping[DataType, tuple[str, ...]]] = {
    DataType.LOOKUP: LOOKUP_NAMES,
    DataType.ANALYTICS: ANALYTICS_NAMES,
    DataType.STATISTICS: STATISTICS_NAMES,
}


def _no_progress(done: int, total: int) -> None:
    return None


@dataclass(slots=True)
class WarmReport:
    total: int = 0  # units planned: aggregate keys plus member ids
    done: int = 0  # units processed
    written: int = 0  # keys stored
    missing: int = 0  # requested member ids that do not exist
    started: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "done": self.done,
            "written": self.written,
            "missing": self.missing,
            "seconds": round(time.monotonic() - self.started, 3),
        }


def _store(cache: CacheService, items: Mapping[str, Any], data_type: DataType) -> int:
    if items and not cache.set_many(items, data_type):
        raise CacheUnavailable(f"could not store {len(items)} {data_type.value} keys")
    return len(items)


def warm_aggregates(
    cache: CacheService, source: Source, data_type: DataType, report: WarmReport
) -> None:
    """Every cached name of one aggregate data type (lookup, analytics or statistics)."""
    names = AGGREGATES[data_type]
    read: dict[DataType, Callable[[str], Any]] = {
        DataType.LOOKUP: source.lookup,
        DataType.ANALYTICS: source.analytics,
        DataType.STATISTICS: source.statistics,
    }
    key_of: dict[DataType, Callable[[str], str]] = {
        DataType.LOOKUP: cache.keys.lookup,
        DataType.ANALYTICS: cache.keys.analytics,
        DataType.STATISTICS: cache.keys.statistics,
    }
    items = {key_of[data_type](name): read[data_type](name) for name in names}
    report.written += _store(cache, items, data_type)
    report.done += len(names)


def _store_members(cache: CacheService, members: Iterable[Member]) -> int:
    items = {cache.keys.member(member["id"]): member for member in members}
    return _store(cache, items, DataType.MEMBER)


def warm_members(
    cache: CacheService,
    source: Source,
    ids: Iterable[int],
    *,
    batch_size: int = BATCH_SIZE,
    progress: Progress = _no_progress,
    report: WarmReport | None = None,
) -> WarmReport:
    """The given members, ``batch_size`` ids per query and per pipeline."""
    wanted = list(dict.fromkeys(int(member_id) for member_id in ids))
    report = report or WarmReport(started=time.monotonic())
    report.total += len(wanted)
    for start in range(0, len(wanted), batch_size):
        chunk = wanted[start : start + batch_size]
        found = source.members(chunk)
        report.written += _store_members(cache, found.values())
        report.missing += len(chunk) - len(found)
        report.done += len(chunk)
        progress(report.done, report.total)
    return report


def warm_all_members(
    cache: CacheService,
    source: Source,
    *,
    batch_size: int = BATCH_SIZE,
    progress: Progress = _no_progress,
) -> WarmReport:
    """Every member, in id order, one keyset query and one pipeline per batch.

    ``total`` is counted first; members created during the run are warmed too (done may end
    above total), members deleted during it are simply not found.
    """
    report = WarmReport(started=time.monotonic(), total=source.count_members())
    progress(0, report.total)
    for page in source.member_pages(batch_size):
        report.written += _store_members(cache, page)
        report.done += len(page)
        progress(report.done, max(report.total, report.done))
    report.total = max(report.total, report.done)
    return report


def warm_critical(
    cache: CacheService,
    source: Source,
    *,
    hottest: int = HOTTEST,
    batch_size: int = BATCH_SIZE,
    progress: Progress = _no_progress,
) -> WarmReport:
    """What the first requests after a cold start need: lookups, the analytics dashboard,
    the statistics, then the ``hottest`` most active members."""
    report = WarmReport(started=time.monotonic())
    ids = source.hottest_member_ids(hottest)
    report.total = sum(len(names) for names in AGGREGATES.values()) + len(ids)
    for data_type in AGGREGATES:
        warm_aggregates(cache, source, data_type, report)
        progress(report.done, report.total)
    report.total -= len(ids)  # warm_members adds them back
    return warm_members(cache, source, ids, batch_size=batch_size, progress=progress, report=report)


def warm_data_type(
    cache: CacheService,
    source: Source,
    name: str,
    *,
    batch_size: int = BATCH_SIZE,
    progress: Progress = _no_progress,
) -> WarmReport:
    """One data type: "lookup", "analytics", "statistics", or "member" (every member)."""
    data_type = DataType(name)
    if data_type is DataType.MEMBER:
        return warm_all_members(cache, source, batch_size=batch_size, progress=progress)
    if data_type not in AGGREGATES:
        raise ValueError(f"cannot warm data type {name!r}")
    report = WarmReport(started=time.monotonic(), total=len(AGGREGATES[data_type]))
    warm_aggregates(cache, source, data_type, report)
    progress(report.done, report.total)
    return report
