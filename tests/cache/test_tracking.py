"""The near tier against real Redis: pushes, the read/invalidate race, flushes, reconnects.

Services.open starts the tracking connection, as every process does; the writes of "another
process" go through a second cache front that has no near tier of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.exceptions import RedisError

from cache import MISS, CacheService, DataType, build_cache
from cache.near import NearCache
from config import Settings, load_settings
from services import Services
from tests.support.redis_procs import RedisProcess, start_redis, start_replica, start_sentinels

M = DataType.MEMBER


def _until(check: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``check``; a server that resets the connection mid-failover answers "not yet"."""

    def checked() -> bool:
        try:
            return check()
        except (RedisError, OSError):
            return False

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if checked():
            return True
        time.sleep(0.001)
    return checked()


def _open(settings: Settings) -> Services:
    services = Services.open(settings, near=True)
    assert services.tracker is not None and services.tracker.wait_connected(5)
    return services


def _near(services: Services) -> NearCache:
    assert services.core.near is not None
    return services.core.near


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    with _open(settings) as opened:
        yield opened


@pytest.fixture
def other(settings: Settings) -> Iterator[CacheService]:
    """Another process's writes: a front whose near tier never goes live."""
    front = build_cache(settings)
    yield front
    front.close()


@pytest.fixture
def private() -> Iterator[RedisProcess]:
    with start_redis(extra={"tracking-table-max-keys": "10"}) as proc:
        yield proc


def _on(proc: RedisProcess, prefix: str) -> Settings:
    return load_settings(
        redis_host="127.0.0.1",
        redis_port=proc.port,
        redis_db=0,
        redis_key_prefix=prefix,
        _env_file=None,
    )


def test_a_push_drops_an_entry_another_client_replaced(
    services: Services, other: CacheService
) -> None:
    cache, near = services.cache, _near(services)
    key = cache.keys.member(1)
    assert other.write_through(key, {"id": 1, "version": 1}, 1, M)
    assert cache.get(key, M) == {"id": 1, "version": 1}  # from Redis, kept
    assert cache.get(key, M) == {"id": 1, "version": 1} and near.counters.hits >= 1
    assert other.write_through(key, {"id": 1, "version": 2}, 2, M)
    assert _until(lambda: cache.get(key, M) == {"id": 1, "version": 2}, 0.5)
    assert near.counters.invalidations >= 1


def _race(cache: CacheService, other: CacheService, near: NearCache, key: str) -> None:
    """Make the next GET of ``cache`` return its reply only after another client replaced
    the value and the tracker handled that push: the invalidation arrives between the read's
    send and its reply."""
    real_get = cache._get

    def slow_get(wanted: str) -> Any:
        raw = real_get(wanted)  # the old value, already on its way
        seen = near.counters.invalidations
        assert other.write_through(key, {"v": "new"}, 2, M)
        assert _until(lambda: near.counters.invalidations > seen)
        return raw

    cache._get = slow_get


def test_an_invalidation_before_the_reply_is_not_kept(
    services: Services, other: CacheService
) -> None:
    cache, near = services.cache, _near(services)
    key = cache.keys.member(2)
    assert other.write_through(key, {"v": "old"}, 1, M)
    _race(cache, other, near, key)
    assert cache.get(key, M) == {"v": "old"}  # the read itself answers what it read...
    assert near.counters.refused == 1  # ...but it is not kept
    cache._get = cache._direct.get if cache._direct else cache.clients.reader.get
    assert cache.get(key, M) == {"v": "new"}
    assert cache.get(key, M) == {"v": "new"}


def test_the_race_on_fetch(services: Services, other: CacheService) -> None:
    cache, near = services.cache, _near(services)
    key = cache.keys.member(3)
    assert other.write_through(key, {"v": "old"}, 1, M)
    _race(cache, other, near, key)
    assert cache.fetch(key, lambda: {"v": "loaded"}, M).value == {"v": "old"}
    assert near.counters.refused == 1
    cache._get = cache._direct.get if cache._direct else cache.clients.reader.get
    assert cache.fetch(key, lambda: {"v": "loaded"}, M).value == {"v": "new"}


@pytest.mark.anyio
async def test_the_race_on_the_async_front(settings: Settings, other: CacheService) -> None:
    services = Services.open(settings, asyncio=True, near=True)
    try:
        assert services.tracker is not None and services.tracker.wait_connected(5)
        acache, near = services.async_cache, _near(services)
        key = acache.keys.member(4)
        assert other.write_through(key, {"v": "old"}, 1, M)
        real_get = acache._get

        async def slow_get(wanted: str) -> Any:
            raw = await real_get(wanted)
            seen = near.counters.invalidations
            assert other.write_through(key, {"v": "new"}, 2, M)
            assert _until(lambda: near.counters.invalidations > seen)
            return raw

        acache._get = slow_get
        assert (await acache.fetch(key, lambda: None, M)).value == {"v": "old"}
        assert near.counters.refused == 1
        acache._get = real_get
        assert (await acache.get(key, M)) == {"v": "new"}
        fetched = await acache.fetch(key, lambda: None, M)
        assert fetched.value == {"v": "new"} and fetched.tier == "near"
    finally:
        await services.aclose()


def test_write_through_updates_the_writers_own_entry(services: Services) -> None:
    cache = services.cache
    key = cache.keys.member(5)
    assert cache.write_through(key, {"v": 1}, 1, M)
    assert cache.get(key, M) == {"v": 1}
    for version in range(2, 40):
        assert cache.write_through(key, {"v": version}, version, M)
        assert cache.get(key, M) == {"v": version}  # never the previous one, at once


def test_the_version_guard_holds_in_the_near_tier(services: Services, other: CacheService) -> None:
    cache, near = services.cache, _near(services)
    key = cache.keys.member(6)
    assert other.write_through(key, {"v": 3}, 3, M)
    assert _until(lambda: cache.get(key, M) == {"v": 3} and key in near._nodes)
    assert not cache.write_through(key, {"v": 2}, 2, M)  # Redis keeps the newer version
    assert cache.get(key, M) == {"v": 3}
    node = near._nodes.get(key)
    assert node is None or node.entry.version == 3


@pytest.mark.fault
def test_a_full_tracking_table_leaves_every_entry_correct(private: RedisProcess) -> None:
    settings = _on(private, "full:")
    with _open(settings) as services:
        cache, writer = services.cache, build_cache(settings)
        try:
            keys = cache.keys.members(range(100))
            for n, key in enumerate(keys):
                assert writer.write_through(key, {"n": n, "v": 1}, 1, M)
            assert [cache.get(key, M) for key in keys] == [{"n": n, "v": 1} for n in range(100)]
            assert len(_near(services)) == 100  # all held, beyond tracking-table-max-keys
            for n, key in enumerate(keys):
                assert writer.write_through(key, {"n": n, "v": 2}, 2, M)
            want = [{"n": n, "v": 2} for n in range(100)]
            assert _until(lambda: [cache.get(key, M) for key in keys] == want, 1.0)
        finally:
            writer.close()


@pytest.mark.fault
def test_flushdb_drops_everything(private: RedisProcess) -> None:
    settings = _on(private, "flush:")
    with _open(settings) as services:
        cache, near = services.cache, _near(services)
        keys = cache.keys.members(range(20))
        assert cache.set_many({key: {"k": key} for key in keys}, M)
        assert all(cache.get(key, M) == {"k": key} for key in keys)
        assert _until(lambda: len(near) == 20 or not [cache.get(k, M) for k in keys])
        flushes = near.counters.flushes
        client = private.client()
        try:
            client.flushdb()
        finally:
            client.close()
        assert _until(lambda: near.counters.flushes > flushes and len(near) == 0, 1.0)
        assert all(cache.get(key, M) is MISS for key in keys)


@pytest.mark.fault
def test_a_killed_tracking_connection_flushes_and_nothing_stale_follows(
    private: RedisProcess,
) -> None:
    settings = _on(private, "kill:")
    with _open(settings) as services:
        cache, near, tracker = services.cache, _near(services), services.tracker
        assert tracker is not None
        writer = build_cache(settings)
        client = private.client()
        try:
            keys = cache.keys.members(range(10))
            for key in keys:
                assert writer.write_through(key, {"v": 1}, 1, M)
            assert _until(lambda: all(cache.get(k, M) == {"v": 1} for k in keys) and len(near))
            flushes, sessions = near.counters.flushes, tracker.sessions
            assert client.client_kill_filter(_id=tracker.client_id) == 1
            # Written while the tier has no tracking connection: these pushes are lost.
            for key in keys:
                assert writer.write_through(key, {"v": 2}, 2, M)
            assert _until(lambda: near.counters.flushes > flushes, 1.0)
            assert _until(lambda: tracker.sessions > sessions, 3.0)  # reconnected
            assert [cache.get(key, M) for key in keys] == [{"v": 2}] * 10
            assert [cache.get(key, M) for key in keys] == [{"v": 2}] * 10
        finally:
            client.close()
            writer.close()


@pytest.mark.fault
@pytest.mark.slow
def test_a_sentinel_failover_moves_tracking_to_the_new_master_and_flushes() -> None:
    with start_redis() as master, start_replica(master) as replica:
        sentinels = start_sentinels(master, count=3, down_after_ms=1000, failover_timeout_ms=5000)
        try:
            settings = load_settings(
                redis_sentinels=",".join(f"127.0.0.1:{s.port}" for s in sentinels),
                redis_sentinel_master="mymaster",
                redis_key_prefix="failover:",
                cache_breaker_reset_seconds=0.3,
                _env_file=None,
            )
            with _open(settings) as services:
                cache, near, tracker = services.cache, _near(services), services.tracker
                assert tracker is not None
                writer = build_cache(settings)
                try:
                    key = cache.keys.member(1)
                    assert writer.write_through(key, {"v": 1}, 1, M)
                    assert _until(lambda: cache.get(key, M) == {"v": 1} and key in near._nodes)
                    flushes, sessions = near.counters.flushes, tracker.sessions
                    sentinel = sentinels[0].client()
                    try:
                        sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")
                    finally:
                        sentinel.close()
                    assert _until(lambda: replica.info("replication")["role"] == "master", 30)
                    assert _until(lambda: tracker.sessions > sessions, 30)
                    assert near.counters.flushes > flushes
                    # The tracker now listens on the new master: its writes reach this tier.
                    assert _until(lambda: bool(writer.write_through(key, {"v": 2}, 2, M)), 30)
                    assert _until(lambda: cache.get(key, M) == {"v": 2}, 5)
                    new_master = replica.client()
                    try:
                        ids = [int(c["id"]) for c in new_master.client_list()]
                    finally:
                        new_master.close()
                    assert tracker.client_id in ids
                    assert _until(lambda: key in near._nodes and cache.get(key, M) == {"v": 2})
                    assert writer.write_through(key, {"v": 3}, 3, M)
                    assert _until(lambda: cache.get(key, M) == {"v": 3}, 1)
                finally:
                    writer.close()
        finally:
            for sentinel_proc in sentinels:
                sentinel_proc.close()


def test_a_bulk_write_flushes_the_tier(services: Services, other: CacheService) -> None:
    cache, near = services.cache, _near(services)
    keys = cache.keys.members(range(2000))
    assert other.set_many({key: {"k": 1} for key in keys}, M)
    assert _until(lambda: all(cache.get(key, M) == {"k": 1} for key in keys[:5]) and len(near))
    flushes = near.counters.flushes
    assert other.delete(*keys) == 2000  # one UNLINK of 2,000 keys: one push naming them all
    assert _until(lambda: near.counters.flushes > flushes and len(near) == 0, 1.0)
    assert all(cache.get(key, M) is MISS for key in keys[:5])
