"""The sync and async fronts against the real Redis."""

from __future__ import annotations

import pickle
import threading
import time
from typing import Any

import pytest

from cache import MISS, NOT_FOUND, AsyncCacheService, CacheService, DataType, Outcome


def test_set_get_delete(cache: CacheService) -> None:
    key = cache.keys.member(1)
    assert cache.get(key, DataType.MEMBER) is MISS
    assert cache.set(key, {"id": 1, "name": "Ada"}, DataType.MEMBER)
    assert cache.get(key, DataType.MEMBER) == {"id": 1, "name": "Ada"}
    assert cache.delete(key) == 1
    assert cache.get(key, DataType.MEMBER) is MISS
    counters = cache.metrics.of(DataType.MEMBER)
    assert (counters.hits, counters.misses, counters.writes) == (1, 2, 1)


def test_none_is_a_value_not_a_miss(cache: CacheService) -> None:
    key = cache.keys.entry(DataType.DEFAULT, "nothing")
    cache.set(key, None)
    assert cache.get(key) is None


def test_hard_ttl_outlives_soft_ttl_per_type(cache: CacheService) -> None:
    for data_type, base in [
        (DataType.MEMBER, 900),
        (DataType.LOOKUP, 86400),
        (DataType.ANALYTICS, 3600),
        (DataType.STATISTICS, 1800),
    ]:
        key = cache.keys.entry(data_type, "ttl")
        cache.set(key, 1, data_type)
        pttl = cache.clients.writer.pttl(key)
        assert base * 0.9 * 1.5 * 1000 <= pttl <= base * 1.1 * 1.5 * 1000 + 5


def test_many_in_one_round_trip(cache: CacheService) -> None:
    keys = cache.keys.members(range(50))
    assert cache.set_many({k: {"n": i} for i, k in enumerate(keys[:40])}, DataType.MEMBER)
    values = cache.get_many(keys, DataType.MEMBER)
    assert values[:40] == [{"n": i} for i in range(40)]
    assert values[40:] == [MISS] * 10
    assert cache.get_many([]) == []


def test_get_or_load_caches_and_negative_caches(cache: CacheService) -> None:
    calls: list[int] = []

    def loader() -> Any:
        calls.append(1)
        return NOT_FOUND if len(calls) == 1 else {"id": 5}

    key = cache.keys.member(5)
    assert cache.get_or_load(key, loader, DataType.MEMBER) is NOT_FOUND
    assert cache.get_or_load(key, loader, DataType.MEMBER) is NOT_FOUND  # served from cache
    assert len(calls) == 1
    assert 0 < cache.clients.writer.pttl(key) <= 30_000  # short negative TTL
    # The moment the member exists, write-through replaces the negative entry.
    assert cache.write_through(key, {"id": 5}, 1, DataType.MEMBER)
    assert cache.get_or_load(key, loader, DataType.MEMBER) == {"id": 5}
    assert len(calls) == 1


def test_loader_errors_propagate_and_release_the_lease(cache: CacheService) -> None:
    key = cache.keys.member(6)

    def broken() -> Any:
        raise LookupError("db says no")

    with pytest.raises(LookupError):
        cache.get_or_load(key, broken, DataType.MEMBER)
    assert not cache.clients.writer.exists(cache.keys.lease(key))
    assert cache.get_or_load(key, lambda: "ok", DataType.MEMBER) == "ok"


def test_version_guard_rejects_an_older_write(cache: CacheService) -> None:
    key = cache.keys.member(7)
    assert cache.write_through(key, {"v": 3}, 3, DataType.MEMBER)
    assert not cache.write_through(key, {"v": 2}, 2, DataType.MEMBER)
    assert cache.get(key, DataType.MEMBER) == {"v": 3}
    assert cache.write_through(key, {"v": 4}, 4, DataType.MEMBER)
    assert cache.get(key, DataType.MEMBER) == {"v": 4}


def test_slow_fill_of_an_old_row_never_overwrites_a_newer_write(cache: CacheService) -> None:
    key = cache.keys.member(8)
    loading, release = threading.Event(), threading.Event()
    result: list[Any] = []

    def slow_old_row() -> dict[str, int]:
        loading.set()
        release.wait(5)
        return {"version": 1}

    reader = threading.Thread(
        target=lambda: result.append(
            cache.get_or_load(
                key, slow_old_row, DataType.MEMBER, version_of=lambda row: row["version"]
            )
        )
    )
    reader.start()
    assert loading.wait(5)
    assert cache.write_through(key, {"version": 2}, 2, DataType.MEMBER)  # commit + refresh
    release.set()
    reader.join(5)
    assert result == [{"version": 1}]  # the caller gets what it loaded...
    assert cache.get(key, DataType.MEMBER) == {"version": 2}  # ...but the cache keeps v2
    assert cache.metrics.of(DataType.MEMBER).writes_rejected == 1


def test_invalidation_during_a_load_refuses_the_stale_fill(cache: CacheService) -> None:
    key = cache.keys.analytics("dashboard")
    loading, release = threading.Event(), threading.Event()

    def slow() -> str:
        loading.set()
        release.wait(5)
        return "computed-before-the-change"

    reader = threading.Thread(target=lambda: cache.get_or_load(key, slow, DataType.ANALYTICS))
    reader.start()
    assert loading.wait(5)
    cache.delete(key)  # a change committed meanwhile invalidates the aggregate
    release.set()
    reader.join(5)
    assert cache.get(key, DataType.ANALYTICS) is MISS


def test_stale_value_is_served_while_one_caller_refreshes(cache: CacheService) -> None:
    key = cache.keys.statistics("demographics")
    cache.set(key, "old", DataType.STATISTICS, ttl=0.2)
    time.sleep(0.25)  # soft-expired, still in Redis (hard TTL is longer)
    assert cache.get(key, DataType.STATISTICS) == "old"
    assert cache.metrics.of(DataType.STATISTICS).stale == 1
    assert cache.get_or_load(key, lambda: "new", DataType.STATISTICS) == "new"
    assert cache.get(key, DataType.STATISTICS) == "new"


def test_early_refresh_recomputes_before_expiry(cache: CacheService) -> None:
    key = cache.keys.analytics("early")
    loads: list[int] = []

    def loader() -> int:
        loads.append(1)
        time.sleep(0.02)  # delta = 20 ms against a 50 ms TTL: refreshes come early
        return len(loads)

    cache.get_or_load(key, loader, DataType.ANALYTICS, ttl=0.05)
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        cache.get_or_load(key, loader, DataType.ANALYTICS, ttl=0.05)
    counters = cache.metrics.of(DataType.ANALYTICS)
    assert counters.early_refreshes >= 1
    assert counters.stale == 0 or counters.early_refreshes > counters.stale


@pytest.mark.parametrize("raw", [b"not an envelope", pickle.dumps({"x": 1})])
def test_corrupt_or_foreign_bytes_are_a_miss(cache: CacheService, raw: bytes) -> None:
    key = cache.keys.member(9)
    cache.clients.writer.set(key, raw)
    assert cache.get(key, DataType.MEMBER) is MISS
    assert cache.get_or_load(key, lambda: {"fresh": True}, DataType.MEMBER) == {"fresh": True}
    assert cache.get(key, DataType.MEMBER) == {"fresh": True}
    assert cache.metrics.of(DataType.MEMBER).errors >= 2


@pytest.mark.anyio
async def test_async_front_matches_the_sync_one(
    acache: AsyncCacheService, cache: CacheService
) -> None:
    key = acache.keys.member(10)
    assert await acache.get(key, DataType.MEMBER) is MISS

    async def loader() -> dict[str, int]:
        return {"version": 2}

    assert await acache.get_or_load(
        key, loader, DataType.MEMBER, version_of=lambda row: row["version"]
    ) == {"version": 2}
    assert cache.get(key, DataType.MEMBER) == {"version": 2}  # same bytes for both fronts
    assert not await acache.write_through(key, {"version": 1}, 1, DataType.MEMBER)
    assert await acache.set_many({acache.keys.member(11): 11}, DataType.MEMBER)
    assert await acache.get_many([key, acache.keys.member(11)], DataType.MEMBER) == [
        {"version": 2},
        11,
    ]
    assert await acache.get_or_load(acache.keys.member(12), lambda: NOT_FOUND) is NOT_FOUND
    assert await acache.delete(key, acache.keys.member(11)) == 2


def test_guarded_batch_never_undoes_a_newer_write(cache: CacheService) -> None:
    keys = cache.keys.members([20, 21])
    assert cache.write_through(keys[0], {"v": 5}, 5, DataType.MEMBER)
    # A warm-up that read version 4 of member 20 and version 1 of member 21.
    stored = cache.set_many(
        {keys[0]: {"v": 4}, keys[1]: {"v": 1}}, DataType.MEMBER, versions={keys[0]: 4, keys[1]: 1}
    )
    assert stored is False  # not every key was written...
    assert cache.get_many(keys, DataType.MEMBER) == [{"v": 5}, {"v": 1}]  # ...the newer one won
    assert cache.metrics.of(DataType.MEMBER).writes_rejected == 1


def test_info_reports_the_server(cache: CacheService) -> None:
    info = cache.info("memory")
    assert info is not None and info["used_memory"] > 0


@pytest.mark.anyio
async def test_async_guarded_batch(acache: AsyncCacheService) -> None:
    keys = acache.keys.members([30, 31])
    assert await acache.write_through(keys[0], {"v": 9}, 9, DataType.MEMBER)
    await acache.set_many(
        {keys[0]: {"v": 8}, keys[1]: {"v": 1}}, DataType.MEMBER, versions={keys[0]: 8, keys[1]: 1}
    )
    assert await acache.get_many(keys, DataType.MEMBER) == [{"v": 9}, {"v": 1}]
    assert (await acache.info("server") or {})["redis_version"]


def test_counter_names_cover_every_integer_counter() -> None:
    from cache.metrics import COUNTER_NAMES, TypeCounters

    integers = {name for name in TypeCounters.__slots__ if name != "load_seconds"}
    assert set(COUNTER_NAMES) == integers and len(COUNTER_NAMES) == len(integers)


def test_fetch_reports_how_each_value_was_served(cache: CacheService) -> None:
    key = cache.keys.statistics("served")
    first = cache.fetch(key, lambda: "v1", DataType.STATISTICS, ttl=0.3)
    assert (first.value, first.outcome) == ("v1", Outcome.MISS)
    assert first.fresh_for is not None and 0.25 <= first.fresh_for <= 0.35  # jittered TTL
    second = cache.fetch(key, lambda: "unused", DataType.STATISTICS)
    assert (second.value, second.outcome) == ("v1", Outcome.HIT)
    assert second.fresh_for is not None and 0 < second.fresh_for <= first.fresh_for
    time.sleep(0.35)  # soft-expired; another caller is refreshing it
    cache.clients.writer.set(cache.keys.lease(key), "someone-else", px=5000)
    stale = cache.fetch(key, lambda: "unused", DataType.STATISTICS)
    assert (stale.value, stale.outcome, stale.fresh_for) == ("v1", Outcome.STALE, 0.0)
    assert cache.snapshot()["by_type"]["statistics"]["stale"] == 1
