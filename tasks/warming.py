"""Warm-up logic: read from a Source in batches, write to the cache in pipelined batches.

Plain functions over a CacheService and a Source, with no Celery in sight: the tasks in
tasks/warmup.py only call them and relay progress. Every batch is one read (one query), one
write (one pipelined round trip) and one re-read of the versions of what was stored (a
primary-key query: see :func:`_fill_members`), so a warm-up costs ``3 * members /
batch_size`` round trips, not one per key. Warming every member reads the next page while
the current one is written (a reader thread), so the database and Redis work at the same
time.

What is warmed is declared per kind (cache.kinds): ``warmup critical`` fills every variant of
the kinds marked ``Warm.CRITICAL`` and the hottest records of ``Warm.HOTTEST``. An aggregate is
stored under ``Kind.key`` with the generations of its tags read *before* its query, the very
key the API reads: a bump between the read and the write leaves the value under a retired key,
never a stale value under the current one.

Members are filled only where missing (tasks/bulkwrite.py: SET NX); ``written`` counts the
keys stored, ``present`` those already cached. Aggregates are recomputed and replaced (all
of them, or the variants a caller names: tasks/autowarm.py after a failover).

A batch that Redis refuses raises CacheUnavailable (the task retries); re-running a warm-up
is harmless, it fills what is still missing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import orjson

from cache import CacheService, DataType
from cache.errors import CacheUnavailable
from cache.invalidation import generations_sync
from cache.kinds import KINDS, Kind, Warm
from tasks.bulkwrite import fill_missing, fragment
from tasks.pacing import Pace
from tasks.sources import Member, MemberRow, Source

T = TypeVar("T")

BATCH_SIZE: Final = 5_000  # members per query and per pipeline: ~2 MB of values
HOTTEST: Final = 1_000  # members warmed by warmup_critical
PREFETCH: Final = 2  # pages read ahead of the writer

# Reports progress as (done, total); called once per batch, never per key.
Progress = Callable[[int, int], None]


def _no_progress(done: int, total: int) -> None:
    return None


@dataclass(slots=True)
class WarmReport:
    total: int = 0  # units planned: aggregate keys plus member ids
    done: int = 0  # units processed
    written: int = 0  # keys stored
    present: int = 0  # member keys already cached, left as they were
    missing: int = 0  # requested member ids that do not exist
    retracted: int = 0  # member keys stored, then deleted: a write overtook the row read
    started: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "done": self.done,
            "written": self.written,
            "present": self.present,
            "missing": self.missing,
            "retracted": self.retracted,
            "seconds": round(time.monotonic() - self.started, 3),
        }


def prefetched(pages: Iterable[T], depth: int = PREFETCH) -> Iterator[T]:
    """``pages``, produced by a reader thread up to ``depth`` ahead of the consumer.

    An error in the reader is raised in the consumer; a consumer that stops early stops the
    reader at its next page.
    """
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for page in pages:
                if not offer(("page", page)):
                    return
            offer(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            offer(("error", exc))

    reader = threading.Thread(target=read, name="warmup-reader", daemon=True)
    reader.start()
    try:
        while True:
            kind, item = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        reader.join(timeout=5)


def paced(items: Iterable[T], duty: float) -> Iterator[T]:
    """``items``, resting after each one so that the caller works at most ``duty`` of the wall
    time (tasks/pacing.py: reading an item and the caller's work on it are the unit)."""
    pace = Pace(duty)
    for item in items:
        yield item
        time.sleep(pace.rest())


def _store(cache: CacheService, items: Mapping[str, Any], data_type: DataType) -> int:
    if items and not cache.set_many(items, data_type):
        raise CacheUnavailable(f"could not store {len(items)} {data_type.value} keys")
    return len(items)


def warm_kind(
    cache: CacheService,
    source: Source,
    kind: Kind,
    report: WarmReport,
    variants: Collection[tuple[Any, ...]] | None = None,
) -> None:
    """Every variant of one aggregate kind (or those of ``variants``), under the key the API
    reads."""
    gens = generations_sync(cache, kind.tags)  # before the query: see the module docstring
    if gens is None:
        raise CacheUnavailable(f"could not read the generations of {kind.name}")
    items = {
        key: source.load(kind, params)
        for key, params in kind.variant_keys(cache.keys, gens).items()
        if variants is None or params in variants
    }
    report.written += _store(cache, items, kind.data_type)
    report.done += len(kind.variants) if variants is None else len(items)


def _aggregates(data_type: DataType | None = None) -> tuple[Kind, ...]:
    return KINDS.warmed(Warm.CRITICAL, data_type)


def warm_aggregates(
    cache: CacheService,
    source: Source,
    report: WarmReport,
    data_type: DataType | None = None,
    progress: Progress = _no_progress,
    only: Mapping[Kind, Collection[tuple[Any, ...]]] | None = None,
) -> None:
    """Every aggregate kind (of one data type, when given), each variant one query; with
    ``only``, just the variants it names."""
    for kind in _aggregates(data_type):
        if only is not None and not only.get(kind):
            continue
        warm_kind(cache, source, kind, report, None if only is None else only[kind])
        progress(report.done, report.total)


def aggregate_count(data_type: DataType | None = None) -> int:
    """How many keys :func:`warm_aggregates` fills."""
    return sum(len(kind.variants) for kind in _aggregates(data_type))


def _fill_members(
    cache: CacheService, source: Source, rows: list[MemberRow], report: WarmReport
) -> None:
    """Fill the rows' missing keys, then retract those a write overtook: a write committed
    after the page was read, whose invalidation deleted the key before the SET NX, left the
    old version cached. One primary-key query re-reads the versions of what was stored; a
    write committed after that query invalidates after our SET, so nothing slips between."""
    key = cache.keys.member
    items = [(key(member_id), fragment(doc), version) for member_id, version, doc in rows]
    stored = fill_missing(cache, items, DataType.MEMBER)
    report.written += len(stored)
    report.present += len(rows) - len(stored)
    if not stored:
        return
    ids = {item[0]: row[0] for item, row in zip(items, rows, strict=True)}  # key -> member id
    overtaken = source.overtaken([(ids[k], version) for k, _, version in stored])
    if overtaken:
        # With their leases; queued in the outbox if Redis is away.
        cache.delete(*(key(member_id) for member_id in overtaken))
        report.retracted += len(overtaken)


def _rows(members: Iterable[Member]) -> list[MemberRow]:
    return [(m["id"], m["version"], orjson.dumps(m)) for m in members]


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
        _fill_members(cache, source, _rows(found.values()), report)
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
    duty: float = 1.0,
) -> WarmReport:
    """Every member, in id order, one keyset query and one pipeline per batch, working
    ``duty`` of the time (:func:`paced`).

    ``total`` is counted first; members created during the run are warmed too (done may end
    above total), members deleted during it are simply not found.
    """
    report = WarmReport(started=time.monotonic(), total=source.count_members())
    progress(0, report.total)
    for page in paced(prefetched(source.member_pages(batch_size)), duty):
        _fill_members(cache, source, page, report)
        report.done += len(page)
        progress(report.done, max(report.total, report.done))
    report.total = max(report.total, report.done)
    return report


def member_chunks(bounds: tuple[int, int] | None, chunk_size: int) -> list[tuple[int, int | None]]:
    """Id ranges (after, upto] of about ``chunk_size`` ids covering ``bounds`` (the lowest and
    highest member id); the last is open (None), so members created meanwhile are warmed."""
    if bounds is None:
        return [(0, None)]
    low, high = bounds
    starts = range(low - 1, high, chunk_size)
    return [(after, after + chunk_size) for after in starts[:-1]] + [(starts[-1], None)]


def warm_member_range(
    cache: CacheService,
    source: Source,
    after: int,
    upto: int | None,
    *,
    batch_size: int = BATCH_SIZE,
    progress: Progress = _no_progress,
    duty: float = 1.0,
) -> WarmReport:
    """The members with ``after`` < id <= ``upto`` (None: no upper bound), one keyset query
    and one pipeline per batch, working ``duty`` of the time (:func:`paced`); ``total`` is
    what was found."""
    report = WarmReport(started=time.monotonic())
    pages = prefetched(source.member_pages(batch_size, after=after, upto=upto))
    for page in paced(pages, duty):
        _fill_members(cache, source, page, report)
        report.done += len(page)
        report.total = report.done
        progress(report.done, report.total)
    return report


def warm_critical(
    cache: CacheService,
    source: Source,
    *,
    hottest: int = HOTTEST,
    batch_size: int = BATCH_SIZE,
    progress: Progress = _no_progress,
    only: Mapping[Kind, Collection[tuple[Any, ...]]] | None = None,
) -> WarmReport:
    """What the first requests after a cold start need: every aggregate kind marked
    ``Warm.CRITICAL`` (lookups, analytics, statistics), or the variants ``only`` names, then
    the ``hottest`` most active members."""
    report = WarmReport(started=time.monotonic())
    ids = source.hottest_member_ids(hottest)
    planned = aggregate_count() if only is None else sum(map(len, only.values()))
    report.total = planned + len(ids)
    warm_aggregates(cache, source, report, progress=progress, only=only)
    report.total -= len(ids)  # warm_members adds them back
    return warm_members(cache, source, ids, batch_size=batch_size, progress=progress, report=report)


def warmable_type(name: str) -> DataType:
    """The data type a warm-up of ``name`` fills (ValueError when none)."""
    try:
        data_type = DataType(name)
    except ValueError:
        data_type = DataType.DEFAULT
    if data_type not in KINDS.warmable_types:
        raise ValueError(f"cannot warm data type {name!r}")
    return data_type


def warms_every_member(data_type: DataType) -> bool:
    """Whether warming the data type means warming every member (its records)."""
    return bool(KINDS.warmed(Warm.HOTTEST, data_type))


def warm_data_type(
    cache: CacheService,
    source: Source,
    name: str,
    *,
    batch_size: int = BATCH_SIZE,
    progress: Progress = _no_progress,
) -> WarmReport:
    """One data type (cache.kinds.KINDS.warmable_types): its records, every one (members), or
    its aggregate kinds."""
    data_type = warmable_type(name)
    if warms_every_member(data_type):
        return warm_all_members(cache, source, batch_size=batch_size, progress=progress)
    report = WarmReport(started=time.monotonic(), total=aggregate_count(data_type))
    warm_aggregates(cache, source, report, data_type, progress)
    return report


def warm_everything(
    cache: CacheService, source: Source, *, progress: Progress = _no_progress, duty: float = 1.0
) -> WarmReport:
    """``warmup all`` in one task: every member (working ``duty`` of the time), then every
    aggregate."""
    report = warm_all_members(cache, source, progress=progress, duty=duty)
    report.total += aggregate_count()
    warm_aggregates(cache, source, report, progress=progress)
    return report
