"""@region.cached against the real Redis: hits, tag bumps, both fronts, fail-open, single flight."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import pytest

from cache import (
    AsyncCacheService,
    CacheRegion,
    CacheService,
    DataType,
    build_async_cache,
    build_cache,
)
from cache.errors import RegionError
from cache.invalidation import bump, bump_sync
from config import Settings
from tests.support.redis_procs import free_port


@pytest.fixture
def region(cache: CacheService) -> Iterator[CacheRegion]:
    region = CacheRegion()
    region.bind(cache)
    yield region
    region.unbind()


@pytest.fixture
async def aregion(cache: CacheService, acache: AsyncCacheService) -> AsyncIterator[CacheRegion]:
    region = CacheRegion()
    region.bind(cache, acache)  # as a process with both fronts binds it
    yield region
    region.unbind()


@pytest.fixture
def down(settings: Settings) -> Iterator[CacheService]:
    """A sync front whose Redis is not there (a free port nobody listens on)."""
    service = build_cache(settings.model_copy(update={"redis_port": free_port()}))
    yield service
    service.close()


@pytest.fixture
async def adown(settings: Settings) -> AsyncIterator[AsyncCacheService]:
    service = build_async_cache(settings.model_copy(update={"redis_port": free_port()}))
    yield service
    await service.close()


def test_the_second_call_is_a_hit(region: CacheRegion, cache: CacheService) -> None:
    calls: list[int] = []

    @region.cached("growth")
    def growth() -> dict[str, int]:
        calls.append(1)
        return {"joined": 41}

    assert growth() == {"joined": 41}
    assert growth() == {"joined": 41}
    assert len(calls) == 1
    counters = cache.metrics.of(DataType.ANALYTICS)
    assert (counters.misses, counters.hits, counters.loads) == (1, 1, 1)


def test_the_key_is_the_kinds_with_the_current_generations(
    region: CacheRegion, cache: CacheService
) -> None:
    @region.cached("lookup")
    def lookup(name: str) -> list[str]:
        return [name.upper()]

    assert lookup("tiers") == ["TIERS"]
    # The warm-up and the API read this very key (Kind.key): one entry, shared.
    assert cache.get(cache.keys.entry(DataType.LOOKUP, "tiers"), DataType.LOOKUP) == ["TIERS"]


def test_a_bump_of_the_kinds_tag_retires_the_entry(
    region: CacheRegion, cache: CacheService
) -> None:
    version = [1]

    @region.cached("dashboard")
    def dashboard() -> dict[str, int]:
        return {"computed": version[0]}

    assert dashboard() == {"computed": 1}
    version[0] = 2
    assert dashboard() == {"computed": 1}  # cached
    assert bump_sync(cache, ["analytics"])  # a member changed
    assert dashboard() == {"computed": 2}


@pytest.mark.anyio
async def test_async_functions_use_the_async_front(
    aregion: CacheRegion, acache: AsyncCacheService
) -> None:
    region = aregion
    calls: list[str] = []

    @region.cached("lookup", key=lambda name, **_: (name,))
    async def lookup(name: str, *, shout: bool = False) -> list[str]:
        calls.append(name)
        return [name]

    assert await lookup("countries") == ["countries"]
    assert await lookup("countries", shout=True) == ["countries"]  # same key
    assert await lookup("statuses") == ["statuses"]
    assert calls == ["countries", "statuses"]

    @region.cached("demographics")
    async def demographics() -> dict[str, int]:
        calls.append("demographics")
        return {"n": len(calls)}

    first = await demographics()
    assert await demographics() == first
    assert await bump(acache, ["statistics"])
    assert await demographics() != first


@pytest.mark.anyio
async def test_concurrent_async_callers_run_the_function_once(aregion: CacheRegion) -> None:
    region = aregion
    calls: list[int] = []

    @region.cached("growth")
    async def growth() -> dict[str, int]:
        calls.append(1)
        await anyio.sleep(0.2)  # an expensive query
        return {"joined": 7}

    results: list[Any] = []

    async def call() -> None:
        results.append(await growth())

    async with anyio.create_task_group() as tasks:
        for _ in range(20):
            tasks.start_soon(call)
    assert results == [{"joined": 7}] * 20
    assert len(calls) == 1


def test_concurrent_threads_run_the_function_once(region: CacheRegion, cache: CacheService) -> None:
    calls: list[int] = []
    gate = threading.Barrier(16)

    @region.cached("demographics")
    def demographics() -> dict[str, str]:
        calls.append(1)
        time.sleep(0.2)
        return {"computed": "once"}

    def call(_: int) -> Any:
        gate.wait()
        return demographics()

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, range(16)))
    assert results == [{"computed": "once"}] * 16
    assert len(calls) == 1
    assert cache.metrics.of(DataType.STATISTICS).lease_waits >= 1


def test_redis_down_runs_the_function_every_time(down: CacheService) -> None:
    region = CacheRegion()
    region.bind(down)
    calls: list[int] = []

    @region.cached("dashboard")
    def dashboard() -> dict[str, int]:
        calls.append(1)
        return {"n": len(calls)}

    assert [dashboard() for _ in range(3)] == [{"n": 1}, {"n": 2}, {"n": 3}]


@pytest.mark.anyio
async def test_redis_down_runs_the_async_function(adown: AsyncCacheService) -> None:
    region = CacheRegion()
    region.bind(adown)

    @region.cached("lookup")
    async def lookup(name: str) -> str:
        return name

    assert await lookup("tiers") == "tiers"
    assert await lookup.invalidate("tiers") is False


def test_unbound_or_disabled_runs_the_function(settings: Settings) -> None:
    region = CacheRegion()
    calls: list[int] = []

    @region.cached("growth")
    def growth() -> int:
        calls.append(1)
        return len(calls)

    assert (growth(), growth()) == (1, 2)  # unbound: nothing to cache with
    disabled = build_cache(settings.model_copy(update={"cache_enabled": False}))
    try:
        region.bind(disabled)
        assert (growth(), growth()) == (3, 4)
    finally:
        disabled.close()


@pytest.mark.anyio
async def test_a_region_without_the_needed_front_says_so(cache: CacheService) -> None:
    region = CacheRegion()
    region.bind(cache)

    @region.cached("growth")
    async def growth() -> int:
        return 1

    with pytest.raises(RegionError, match="async front"):
        await growth()


def test_invalidate_deletes_the_entry_of_those_arguments(region: CacheRegion) -> None:
    calls: list[str] = []

    @region.cached("lookup")
    def lookup(name: str) -> str:
        calls.append(name)
        return name

    lookup("tiers")
    lookup("countries")
    assert lookup.invalidate("tiers") is True
    assert lookup.invalidate("tiers") is False  # nothing left to delete
    lookup("tiers")
    lookup("countries")
    assert calls == ["tiers", "countries", "tiers"]


def test_a_record_kind_keeps_the_version_guard(region: CacheRegion, cache: CacheService) -> None:
    @region.cached("member")
    def member(member_id: int) -> dict[str, int]:
        return {"id": member_id, "version": 1}

    key = cache.keys.member(5)
    assert cache.write_through(key, {"id": 5, "version": 3}, 3, DataType.MEMBER)
    assert member(5) == {"id": 5, "version": 3}  # the written-through record is the entry
    cache.delete(key)
    assert member(5) == {"id": 5, "version": 1}
    assert not cache.write_through(key, {"id": 5, "version": 0}, 0, DataType.MEMBER)


def test_arguments_no_key_can_hold_run_uncached(region: CacheRegion) -> None:
    calls: list[str] = []

    @region.cached("lookup")
    def lookup(name: str) -> str:
        calls.append(name)
        return name

    assert lookup("no such{table}") == lookup("no such{table}") == "no such{table}"
    assert len(calls) == 2


def test_mistakes_are_reported_when_decorating(region: CacheRegion) -> None:
    with pytest.raises(KeyError, match="unknown cached kind"):
        region.cached("nope")
    with pytest.raises(ValueError, match="response kind"):
        region.cached("member_list")
    with pytest.raises(ValueError, match="no argument"):

        @region.cached("lookup")
        def wrong(table: str) -> str:
            return table

    @region.cached("lookup", key=lambda: ())
    def keyless() -> str:
        return "x"

    with pytest.raises(ValueError, match="key takes"):
        keyless()
    with pytest.raises(TypeError, match="at most one"):
        region.bind(region, region)  # type: ignore[arg-type]
