"""Refresh-ahead (tasks/refresh.py): the decision without Redis, then a real entry near its
expiry refreshed before it expires, and one nobody read left to expire."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import pytest
from sqlalchemy import Engine

from cache import CacheService, DataType, build_cache
from cache.codec import decode
from cache.ttl import TtlPolicy
from config import Settings
from tasks.refresh import Candidate, RefreshConfig, age, is_due, is_hot, plan, refresh_once
from tasks.sources import Member, SqlSource
from tasks.warming import warm_members

POLICY = TtlPolicy(base={DataType.MEMBER: 100, DataType.DEFAULT: 100}, jitter=0.1, stale_ratio=0.5)


def test_due_means_the_soft_expiry_is_within_the_lead() -> None:
    # Hard TTL left 60 s; the stale window is at most 100 * 0.5 * 1.1 = 55 s: fresh for >= 5 s.
    assert not is_due(60_000, 100, POLICY, lead_s=4)
    assert is_due(60_000, 100, POLICY, lead_s=5)
    assert is_due(10_000, 100, POLICY, lead_s=5)  # already stale: refresh now
    assert not is_due(-2, 100, POLICY, lead_s=1_000)  # missing: a miss already, not ours
    assert not is_due(-1, 100, POLICY, lead_s=1_000)  # no TTL: never expires


def test_hot_means_read_since_written() -> None:
    written_ago = age(60_000, 100, POLICY)  # the shortest hard TTL is 135 s: >= 75 s old
    assert written_ago == pytest.approx(75.0)
    assert is_hot("idle", 10, written_ago)  # read 10 s ago
    assert not is_hot("idle", 75, written_ago)  # idle since it was written
    assert not is_hot("idle", 74, written_ago)  # within the LRU clock's resolution
    assert is_hot("freq", 6, written_ago) and not is_hot("freq", 5, written_ago)
    assert not is_hot("idle", None, written_ago) and not is_hot("freq", None, written_ago)


def test_the_plan_is_hot_and_due_soonest_first() -> None:
    def member(i: int, pttl: int, idle: int) -> Candidate:
        return Candidate(f"m{i}", DataType.MEMBER, pttl, idle, member_id=i)

    found = [
        member(1, 58_000, 1),  # hot, due
        member(2, 56_000, 1),  # hot, due sooner
        member(3, 58_000, 80),  # due, never read since written: a query saving no miss
        member(4, 120_000, 1),  # hot, not due
        member(5, -2, 1),  # gone
    ]
    assert [c.key for c in plan(found, "idle", POLICY, lead_s=5)] == ["m2", "m1"]


# --- a real entry on the shared Redis, members from PostgreSQL ---------------------------------
TTL = 4  # soft 4 s, hard 6 s (no jitter): the test crosses the hard expiry
LEAD = 2.0


@pytest.fixture
def short_cache(settings: Settings) -> Iterator[CacheService]:
    short = settings.model_copy(update={"cache_member_ttl": TTL, "cache_ttl_jitter": 0.0})
    cache = build_cache(short)
    yield cache
    cache.close()


def _until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


@pytest.mark.slow
def test_a_hot_entry_near_expiry_is_refreshed_before_it_expires(
    short_cache: CacheService, pg_engine: Engine
) -> None:
    cache, source = short_cache, SqlSource(pg_engine)  # the engine is the session's
    client = cache.clients.writer
    config = RefreshConfig(lead_s=LEAD, hot_size=100, scan_budget=10_000)
    hot, cold = cache.keys.member(1), cache.keys.member(2)
    written = time.monotonic()
    assert warm_members(cache, source, [1, 2]).written == 2  # the real producer
    before = decode(client.get(hot))

    first = refresh_once(cache, source, client, config)  # finds the members; nothing due
    assert (first.refreshed, first.queries, first.signal) == (0, 0, "idle")

    _until(written + 2.4)  # 1.6 s of fresh life left: due
    assert cache.get(hot, DataType.MEMBER)["id"] == 1  # a reader: member 1 is hot
    second = refresh_once(cache, source, client, config)
    assert second.keys == [hot]  # member 2 is due too, but nobody read it
    assert (second.refreshed, second.queries, second.misses_avoided) == (1, 1, 1)
    assert second.as_dict()["worth_it"] is True

    _until(written + TTL * 1.5 + 0.5)  # past the first write's hard expiry
    after = decode(client.get(hot))
    assert after.created_at > before.created_at
    assert after.version == before.version and after.value == source.members([1])[1]
    assert client.exists(cold) == 0  # left to expire


class _InvalidatedWhileRead(SqlSource):
    """The database as a refresh reads it, while a bulk change's invalidation deletes the
    member's key right after the row is read (cache.delete: what the bulk routes, imports and
    the outbox's replay send)."""

    def __init__(self, engine: Engine, cache: CacheService) -> None:
        super().__init__(engine)
        self.cache = cache

    def members(self, ids: Iterable[int]) -> dict[int, Member]:
        found = super().members(ids)
        self.cache.delete(*(self.cache.keys.member(i) for i in found))
        return found


@pytest.mark.slow
def test_a_refresh_never_brings_back_what_an_invalidation_deleted(
    short_cache: CacheService, pg_engine: Engine
) -> None:
    cache, client = short_cache, short_cache.clients.writer
    config = RefreshConfig(lead_s=LEAD, hot_size=100, scan_budget=10_000)
    key = cache.keys.member(3)
    written = time.monotonic()
    assert warm_members(cache, SqlSource(pg_engine), [3]).written == 1
    refresh_once(cache, SqlSource(pg_engine), client, config)  # finds the member
    _until(written + 2.4)  # due
    assert cache.get(key, DataType.MEMBER)["id"] == 3  # read: hot

    report = refresh_once(cache, _InvalidatedWhileRead(pg_engine, cache), client, config)

    assert (report.due, report.queries, report.refreshed, report.rejected) == (1, 1, 0, 1)
    assert client.exists(key) == 0  # the next reader loads the row as it is now
