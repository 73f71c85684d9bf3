"""cache/invalidation.py against the real Redis: generations, write-through, the outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
import redis

from cache import (
    MISS,
    NOT_FOUND,
    AsyncCacheService,
    CacheService,
    DataType,
    build_async_cache,
    codec,
)
from cache.aio import AsyncCacheService as Front
from cache.breaker import BreakerState
from cache.client import connect_async
from cache.flow import RETIRED_MS
from cache.invalidation import (
    GENERATION_BITS,
    MEMBER_TAGS,
    bump,
    generations,
    member_deleted,
    member_saved,
    members_imported,
    replay_outbox,
)
from config import Settings
from tests.conftest import TEST_REDIS_DB
from tests.support.redis_procs import free_port

pytestmark = pytest.mark.anyio

TAGS = ("analytics", "members")


@pytest.fixture
def raw() -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)


@pytest.fixture
async def down(settings: Settings) -> AsyncIterator[AsyncCacheService]:
    """A cache whose Redis is not there (a free port nobody listens on)."""
    dead = {"redis_port": free_port(), "cache_breaker_reset_seconds": 0.05}
    service = build_async_cache(settings.model_copy(update=dead))
    yield service
    await service.close()


async def test_generations_start_random_and_stay_until_bumped(acache: AsyncCacheService) -> None:
    first = await generations(acache, TAGS)
    assert first is not None and len(first) == 2
    assert all(1 < gen < 2**GENERATION_BITS for gen in first)  # never INCR's 1
    assert await generations(acache, TAGS) == first
    assert await generations(acache, TAGS[:1]) == first[:1]

    assert await bump(acache, TAGS[:1])
    assert await generations(acache, TAGS) == (first[0] + 1, first[1])
    assert await generations(acache, ()) == ()


async def test_a_deleted_generation_restarts_elsewhere(
    acache: AsyncCacheService, raw: redis.Redis
) -> None:
    """Deleting a generation key (an eviction, an outbox replay) is a bump, never a rewind."""
    seen = set()
    for _ in range(5):
        current = await generations(acache, TAGS[:1])
        assert current is not None and current[0] not in seen
        seen.add(current[0])
        raw.delete(acache.keys.generation(TAGS[0]))
    # A bump of a missing key starts it too: not at 1, where an old generation may have been.
    assert await bump(acache, TAGS[:1])
    assert raw.get(acache.keys.generation(TAGS[0])) not in (b"1", None)


async def test_bump_drops_keys_and_their_leases_in_one_round_trip(
    acache: AsyncCacheService, raw: redis.Redis
) -> None:
    keys = acache.keys.members(range(1, 501))
    for key in keys[:3]:
        raw.set(key, b"x")
        raw.set(acache.keys.lease(key), b"loader")
    before = await generations(acache, MEMBER_TAGS)
    assert before is not None
    assert await members_imported(acache, range(1, 501))
    assert raw.exists(*keys[:3], *(acache.keys.lease(key) for key in keys[:3])) == 0
    assert await generations(acache, MEMBER_TAGS) == tuple(gen + 1 for gen in before)


async def test_member_saved_writes_through_with_the_version_guard(
    acache: AsyncCacheService,
) -> None:
    key = acache.keys.member(7)
    gens = await generations(acache, MEMBER_TAGS)
    assert gens is not None
    await member_saved(acache, {"id": 7, "name": "new", "version": 5})
    assert await acache.get(key, DataType.MEMBER) == {"id": 7, "name": "new", "version": 5}
    assert await generations(acache, MEMBER_TAGS) == tuple(gen + 1 for gen in gens)

    await member_saved(acache, {"id": 7, "name": "older", "version": 4})  # a late writer
    assert (await acache.get(key, DataType.MEMBER))["name"] == "new"


async def test_member_deleted_caches_the_absence_above_the_last_version(
    acache: AsyncCacheService,
) -> None:
    key = acache.keys.member(8)
    await member_saved(acache, {"id": 8, "version": 2})
    await member_deleted(acache, 8, version=2)
    assert await acache.get(key, DataType.MEMBER) is NOT_FOUND
    # A fill or write-through of the row as it was before the delete is refused.
    assert not await acache.write_through(key, {"id": 8, "version": 2}, 2, DataType.MEMBER)
    assert await acache.get(key, DataType.MEMBER) is NOT_FOUND


async def test_while_redis_is_down_everything_waits_in_the_outbox(
    down: AsyncCacheService, settings: Settings, acache: AsyncCacheService, raw: redis.Redis
) -> None:
    assert await generations(down, TAGS) is None  # readers bypass the cache
    await member_saved(down, {"id": 9, "version": 3})
    assert not await members_imported(down, [10, 11])
    pending = set(down.core.outbox.drain())
    keys = down.keys
    assert pending == {
        keys.member(9),
        keys.member(10),
        keys.member(11),
        *(keys.generation(tag) for tag in MEMBER_TAGS),
    }

    # Redis is back: the replay loop deletes the pending keys, which bumps the generations.
    before = await generations(acache, MEMBER_TAGS)
    raw.set(keys.member(9), b"old entry")
    down.core.outbox.add(pending)
    back = Front(down.core, connect_async(settings))
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(replay_outbox, back, 0.02)
                while len(down.core.outbox):
                    await anyio.sleep(0.02)
                tasks.cancel_scope.cancel()
        assert raw.exists(keys.member(9)) == 0
        after = await generations(back, MEMBER_TAGS)
        assert before is not None and after is not None
        assert all(new != old for new, old in zip(after, before, strict=True))
    finally:
        await back.close()


async def test_the_replay_loop_recovers_long_before_the_breakers_next_trial(
    settings: Settings, raw: redis.Redis
) -> None:
    """After a failover the promoted replica still holds what the outbox retires: the loop
    replays it within a few of its ticks, not at the breaker's next trial (here 30 s), and
    closes the breaker, so requests use the cache again at once."""
    back = build_async_cache(settings.model_copy(update={"cache_breaker_reset_seconds": 30.0}))
    core = back.core
    for _ in range(core.breaker.failure_threshold):
        core.breaker.failure()  # Redis was away: the breaker is open
    key = back.keys.member(12)
    raw.set(key, b"the copy the promoted replica kept")
    core.outbox.add([key])
    assert await back.get(key, DataType.MEMBER) is MISS  # requests bypass the cache
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(replay_outbox, back, 0.02)
                while core.breaker.state is not BreakerState.CLOSED or len(core.outbox):
                    await anyio.sleep(0.02)
                tasks.cancel_scope.cancel()
        assert raw.exists(key) == 0
        await back.set(key, {"id": 12, "version": 1}, DataType.MEMBER)
        assert await back.get(key, DataType.MEMBER) == {"id": 12, "version": 1}
    finally:
        raw.delete(key)
        await back.close()


def test_sync_bump_moves_generations_and_drops_keys(cache: CacheService) -> None:
    from cache.invalidation import MEMBER_TAGS, bump_sync

    gen_keys = [cache.keys.generation(tag) for tag in MEMBER_TAGS]
    member = cache.keys.member(77)
    cache.set(member, {"id": 77}, DataType.MEMBER)
    assert bump_sync(cache, MEMBER_TAGS)
    first = cache.clients.writer.mget(gen_keys)
    assert bump_sync(cache, MEMBER_TAGS, drop=[member])
    second = cache.clients.writer.mget(gen_keys)
    assert [int(b) - int(a) for a, b in zip(first, second, strict=True)] == [1, 1, 1]
    assert cache.get(member, DataType.MEMBER) is MISS


def test_sync_generations_start_at_random_and_follow_bumps(cache: CacheService) -> None:
    from cache.invalidation import MEMBER_TAGS, bump_sync, generations_sync

    first = generations_sync(cache, MEMBER_TAGS)
    assert first is not None and len(set(first)) == 3  # random starts, not all 1
    assert generations_sync(cache, MEMBER_TAGS) == first
    bump_sync(cache, MEMBER_TAGS[:1])
    after = generations_sync(cache, MEMBER_TAGS)
    assert after == (first[0] + 1, first[1], first[2])


async def test_an_older_write_through_cannot_land_after_a_newer_one_was_replayed(
    acache: AsyncCacheService, raw: redis.Redis
) -> None:
    """Two writes of one member, v10 committed before v11, their write-throughs the other way
    round (two requests of one API, or two processes): v11's finds Redis away and waits in
    the outbox; v10's comes once Redis is back, and its command replays the outbox first. A
    replay that deleted the key left nothing for v10's version guard to see: v10 stayed
    cached over a database at v11 until its TTL. The replay retires the key at v11 instead."""
    key, core = acache.keys.member(21), acache.core
    assert await acache.write_through(key, {"id": 21, "version": 9}, 9, DataType.MEMBER)
    for _ in range(core.breaker.failure_threshold):
        core.breaker.failure()  # Redis away, for v11's write-through
    assert not await acache.write_through(key, {"id": 21, "version": 11}, 11, DataType.MEMBER)
    core.breaker.success()  # back

    assert not await acache.write_through(key, {"id": 21, "version": 10}, 10, DataType.MEMBER)

    assert len(core.outbox) == 0 and raw.exists(key) == 1
    assert await acache.get(key, DataType.MEMBER) is MISS  # retired: no value
    assert acache.metrics.of(DataType.MEMBER).errors == 0
    # The next reader loads the row as it is now, and its fill is taken.
    fetched = await acache.fetch(
        key, lambda: {"id": 21, "version": 11}, DataType.MEMBER, version_of=_version
    )
    assert fetched.fresh_for is not None  # stored
    assert (await acache.get(key, DataType.MEMBER))["version"] == 11


def test_the_sync_front_replays_a_failed_write_through_as_a_retirement(
    cache: CacheService, raw: redis.Redis
) -> None:
    key, core = cache.keys.member(22), cache.core
    assert cache.write_through(key, {"id": 22, "version": 4}, 4, DataType.MEMBER)
    for _ in range(core.breaker.failure_threshold):
        core.breaker.failure()
    assert not cache.write_through(key, {"id": 22, "version": 5}, 5, DataType.MEMBER)
    core.breaker.success()

    assert cache.get(key, DataType.MEMBER) is MISS  # the get replayed the outbox first

    found = raw.get(key)
    assert found is not None and codec.decode(found).retired and codec.decode(found).version == 5
    assert raw.pttl(key) <= RETIRED_MS
    # A fill that read the row before v5 (its lease taken before the replay) is refused.
    assert not cache.set_many({key: {"id": 22, "version": 4}}, DataType.MEMBER, versions={key: 4})
    assert cache.get(key, DataType.MEMBER) is MISS


def _version(value: dict[str, int]) -> int:
    return value["version"]
