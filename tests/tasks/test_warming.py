"""tasks/warming.py against the real Redis, with an in-memory Source that counts its queries."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson
import pytest

from cache import MISS, CacheService, DataType
from cache.errors import CacheUnavailable
from cache.invalidation import bump_sync, generations_sync
from cache.kinds import KINDS, Kind, Warm
from config import Settings
from tasks import warming
from tasks.bulkwrite import fill_missing
from tasks.sources import Member, MemberRow


class FakeSource:
    def __init__(self, count: int) -> None:
        self.rows: dict[int, dict[str, Any]] = {
            i: {"id": i, "email": f"m{i}@example.org", "version": 1} for i in range(1, count + 1)
        }
        self.queries: list[str] = []

    def load(self, kind: Kind, params: Sequence[Any] = ()) -> Any:
        self.queries.append(":".join([kind.name, *map(str, params)]))
        return {"kind": kind.name, "params": list(params), "members": len(self.rows)}

    def hottest_member_ids(self, limit: int) -> list[int]:
        self.queries.append("hottest")
        return sorted(self.rows, reverse=True)[:limit]

    def count_members(self) -> int:
        self.queries.append("count")
        return len(self.rows)

    def members(self, ids: Iterable[int]) -> dict[int, Member]:
        self.queries.append("members")
        return {i: self.rows[i] for i in ids if i in self.rows}

    def overtaken(self, stored: Sequence[tuple[int, int]]) -> list[int]:
        self.queries.append("versions")
        return [i for i, v in stored if i not in self.rows or self.rows[i]["version"] != v]

    def member_id_bounds(self) -> tuple[int, int] | None:
        return (min(self.rows), max(self.rows)) if self.rows else None

    def member_pages(
        self, size: int, *, after: int = 0, upto: int | None = None
    ) -> Iterator[list[MemberRow]]:
        ordered = [i for i in sorted(self.rows) if after < i and (upto is None or i <= upto)]
        for start in range(0, len(ordered), size):
            self.queries.append("page")
            page = [self.rows[i] for i in ordered[start : start + size]]
            yield [(m["id"], m["version"], orjson.dumps(m)) for m in page]
        self.queries.append("page")  # the empty page that ends the scan

    def close(self) -> None:
        pass


class CountingFills:
    """Counts fill_missing calls (each one pipelined round trip) on a real CacheService."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[int] = []
        original = fill_missing

        def fill(cache: CacheService, items: Iterable[Any], data_type: DataType) -> list[Any]:
            batch = list(items)
            self.calls.append(len(batch))
            return original(cache, batch, data_type)

        monkeypatch.setattr(warming, "fill_missing", fill)


def test_warm_all_members_one_page_one_pipeline_and_one_version_check_per_batch(
    cache: CacheService, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, counter = FakeSource(12_345), CountingFills(monkeypatch)
    seen: list[tuple[int, int]] = []
    report = warming.warm_all_members(cache, source, progress=lambda d, t: seen.append((d, t)))
    assert (report.done, report.total, report.written) == (12_345, 12_345, 12_345)
    assert counter.calls == [5_000, 5_000, 2_345]
    # The pages are read ahead by a thread: the order of pages and version checks varies.
    assert sorted(source.queries) == ["count", *["page"] * 4, *["versions"] * 3]
    assert seen == [(0, 12_345), (5_000, 12_345), (10_000, 12_345), (12_345, 12_345)]
    keys = cache.keys.members([1, 5_000, 5_001, 12_345])
    assert cache.get_many(keys, DataType.MEMBER) == [
        source.rows[i] for i in (1, 5_000, 5_001, 12_345)
    ]


def test_warm_members_batches_and_counts_missing(
    cache: CacheService, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, counter = FakeSource(50), CountingFills(monkeypatch)
    report = warming.warm_members(cache, source, [3, 1, 2, 3, 99, 4, 5], batch_size=2)
    assert (report.total, report.done, report.written, report.missing) == (6, 6, 5, 1)
    assert counter.calls == [2, 1, 2]  # ids 3,1 | 2,99 | 4,5 ; 99 is missing
    assert source.queries == ["members", "versions"] * 3


def test_warm_up_fills_what_is_missing_and_never_replaces(cache: CacheService) -> None:
    """A write that landed after the warm-up read its row is kept: the warm-up's row is older."""
    source = FakeSource(3)
    newer = {**source.rows[2], "email": "new@example.org", "version": 2}
    assert cache.write_through(cache.keys.member(2), newer, 2, DataType.MEMBER)
    report = warming.warm_all_members(cache, source)
    assert (report.written, report.present) == (2, 1)
    keys = cache.keys.members([1, 2, 3])
    assert cache.get_many(keys, DataType.MEMBER) == [
        source.rows[1],
        newer,
        source.rows[3],
    ]
    again = warming.warm_all_members(cache, source)
    assert (again.written, again.present) == (0, 3)


def test_prefetched_reads_ahead_and_hands_errors_over() -> None:
    produced: list[int] = []

    def pages() -> Iterator[int]:
        for n in range(5):
            produced.append(n)
            yield n

    assert list(warming.prefetched(pages())) == [0, 1, 2, 3, 4]

    def failing() -> Iterator[int]:
        yield 1
        raise RuntimeError("database went away")

    seen = []
    with pytest.raises(RuntimeError, match="went away"):
        for item in warming.prefetched(failing()):
            seen.append(item)
    assert seen == [1]
    # A consumer that stops early stops the reader too.
    reader_count = threading.active_count()
    stream = warming.prefetched(iter(range(1000)))
    assert next(stream) == 0
    stream.close()  # type: ignore[attr-defined]  # a generator
    assert threading.active_count() <= reader_count


def test_warm_critical_covers_aggregates_then_hottest(cache: CacheService) -> None:
    source = FakeSource(20)
    seen: list[tuple[int, int]] = []
    report = warming.warm_critical(
        cache, source, hottest=4, progress=lambda d, t: seen.append((d, t))
    )
    aggregates = KINDS.warmed(Warm.CRITICAL)
    variants = sum(len(kind.variants) for kind in aggregates)
    assert variants == 3 + 1 + 1 + 1  # lookups, dashboard, growth, demographics
    assert report.total == report.done == variants + 4
    assert seen[-1] == (variants + 4,) * 2 and [d for d, _ in seen] == sorted(d for d, _ in seen)
    # "hottest", the aggregates, then the hottest members and their version check.
    assert source.queries[-2:] == ["members", "versions"]
    assert sorted(source.queries[1:-2]) == sorted(
        ":".join([kind.name, *params]) for kind in aggregates for params in kind.variants
    )
    keys = cache.keys
    for kind in aggregates:
        # Under the key the API reads: the kind's key with its tags' current generations.
        gens = generations_sync(cache, kind.tags)
        assert gens is not None
        for params in kind.variants:
            key = kind.key(keys, params, gens)
            assert cache.get(key, kind.data_type) == source.load(kind, params), key
    for key in keys.members([20, 17]):
        assert cache.clients.writer.exists(key), key
    assert not cache.clients.writer.exists(keys.member(16))


def test_a_bump_retires_what_the_warm_up_wrote(cache: CacheService) -> None:
    kind = KINDS["dashboard"]
    warming.warm_aggregates(cache, FakeSource(3), warming.WarmReport(), kind.data_type)
    gens = generations_sync(cache, kind.tags)
    assert gens is not None
    assert cache.get(kind.key(cache.keys, (), gens), kind.data_type) is not None
    assert bump_sync(cache, kind.tags)
    after = generations_sync(cache, kind.tags)
    assert after is not None and after != gens
    assert cache.get(kind.key(cache.keys, (), after), kind.data_type) is MISS


@pytest.mark.parametrize("name", ["lookup", "analytics", "statistics", "member"])
def test_warm_data_type(cache: CacheService, name: str) -> None:
    report = warming.warm_data_type(cache, FakeSource(7), name)
    assert (
        report.done
        == report.total
        == {"lookup": 3, "analytics": 2, "statistics": 1, "member": 7}[name]
    )
    with pytest.raises(ValueError):
        warming.warm_data_type(cache, FakeSource(1), "default")


def test_redis_down_raises_for_a_retry(settings: Settings) -> None:
    from cache import build_cache

    # A port nothing listens on: the service fails open, the warm-up must not pretend.
    down = build_cache(settings.model_copy(update={"redis_port": 1}))
    try:
        with pytest.raises(CacheUnavailable):
            warming.warm_members(down, FakeSource(3), [1, 2, 3])
    finally:
        down.close()


def test_paced_work_takes_its_duty_of_the_wall_time() -> None:
    """Each item's work is followed by a rest (1/duty - 1) times as long; 1.0 rests never."""
    work = 0.02

    def busy_share(duty: float) -> float:
        started = time.monotonic()
        for _item in warming.paced(range(5), duty):
            time.sleep(work)
        return 5 * work / (time.monotonic() - started)

    assert 0.2 <= busy_share(0.25) <= 0.26
    assert busy_share(1.0) > 0.9
