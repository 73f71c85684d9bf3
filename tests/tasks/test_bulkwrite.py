"""fill_missing: SET NX with the core's envelopes, packed by hand, read back by the core."""

from __future__ import annotations

import pytest

from cache import CacheService, DataType, build_cache
from cache.errors import CacheUnavailable
from config import Settings
from tasks.bulkwrite import fill_missing, fragment
from tests.support.redis_procs import start_redis


def test_values_round_trip_through_the_core(cache: CacheService) -> None:
    keys = cache.keys
    big = {"notes": "é" * 10_000}  # compressed: above the 4 KB threshold
    items = [
        (keys.member(1), {"id": 1, "name": "Ünal"}, 3),
        (keys.member(2), fragment(b'{"id":2,"tags":["a","b"]}'), 1),
        (keys.member(3), big, 1),
    ]
    assert len(fill_missing(cache, items, DataType.MEMBER)) == 3
    assert cache.get_many(keys.members([1, 2, 3]), DataType.MEMBER) == [
        {"id": 1, "name": "Ünal"},
        {"id": 2, "tags": ["a", "b"]},
        big,
    ]
    client = cache.clients.writer
    ttl = client.pttl(keys.member(1))
    policy = cache.core.policy
    assert 0 < ttl <= policy.ttl(DataType.MEMBER) * (1 + policy.jitter) * 1000 * 1.5 + 1
    assert cache.metrics.of(DataType.MEMBER).writes == 3
    # The connection is still in step: an ordinary command right after works.
    assert cache.ping()


def test_existing_keys_are_left_alone(cache: CacheService) -> None:
    key = cache.keys.member(9)
    assert cache.set(key, {"kept": True}, DataType.MEMBER)
    assert len(fill_missing(cache, [(key, {"kept": False}, 99)], DataType.MEMBER)) == 0
    assert cache.get(key, DataType.MEMBER) == {"kept": True}
    assert len(fill_missing(cache, [], DataType.MEMBER)) == 0
    # Among others, only the missing ones are stored and counted.
    items = [(cache.keys.member(n), {"n": n}, 1) for n in range(7, 12)]
    assert len(fill_missing(cache, items, DataType.MEMBER)) == 4
    assert cache.get(key, DataType.MEMBER) == {"kept": True}
    assert cache.get(cache.keys.member(11), DataType.MEMBER) == {"n": 11}


def test_a_refused_batch_is_cache_unavailable_and_the_connection_stays_usable(
    settings: Settings,
) -> None:
    """Redis refusing the SETs (out of memory) is reported, not counted as stored, and the
    next command on the pool gets its own reply."""
    with start_redis(maxmemory="2mb", maxmemory_policy="noeviction") as server:
        full = build_cache(settings.model_copy(update={"redis_port": server.port}))
        try:
            value = {"pad": "x" * 2000}
            items = [(full.keys.member(n), value, 1) for n in range(5_000)]  # ~10 MB
            with pytest.raises(CacheUnavailable):
                fill_missing(full, items, DataType.MEMBER)
            stored = full.clients.writer.dbsize()
            assert 0 < stored < len(items)  # some fitted, the rest was refused
            assert full.metrics.of(DataType.MEMBER).writes == 0
            assert full.clients.writer.get("absent") is None  # in step: its own reply
        finally:
            full.close()


def test_redis_down_is_cache_unavailable(settings: Settings) -> None:
    down = build_cache(settings.model_copy(update={"redis_port": 1}))
    try:
        with pytest.raises(CacheUnavailable):
            fill_missing(down, [(down.keys.member(1), {}, 1)], DataType.MEMBER)
        assert down.metrics.of(DataType.MEMBER).skipped_writes == 1
    finally:
        down.close()


def test_cache_disabled_writes_nothing(settings: Settings) -> None:
    off = build_cache(settings.model_copy(update={"cache_enabled": False}))
    try:
        assert len(fill_missing(off, [(off.keys.member(1), {}, 1)], DataType.MEMBER)) == 0
        assert not off.clients.writer.exists(off.keys.member(1))
    finally:
        off.close()
