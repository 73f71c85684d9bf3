"""Partitions: a member's events go to one stream of several; each stream is flushed in order
with its own offset, side by side, and the totals are exact (real Redis and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine

from cache import CacheService
from cache.writebehind import (
    ActivityEvent,
    Backpressure,
    Flusher,
    WriteBehind,
    WriteBehindConfig,
)
from db.writebehind import read_offset
from tasks.writebehind import sql_apply
from tests.writebehind.support import db_last_seen, db_totals, drain_side_by_side, stream_ids


def parted(cache: CacheService, partitions: int = 3, **kw: int) -> WriteBehind:
    config = WriteBehindConfig(partitions=partitions, linger_ms=0, block_ms=10, **kw)
    wb = WriteBehind(cache.clients.writer, cache.keys, config)
    wb.ensure_group()
    return wb


def test_a_member_always_lands_in_the_same_partition(cache: CacheService) -> None:
    wb = parted(cache)
    assert wb.streams[0] == wb.stream == cache.keys.writebehind("stream")  # 1 -> n keeps it
    ids = wb.record([ActivityEvent(m, "login") for m in (1, 2, 3, 4, 5, 6, 7)])
    by_stream = [set(stream_ids(wb.client, s)) for s in wb.streams]
    assert [sorted(ids[m - 1] for m in members) for members in ([3, 6], [1, 4, 7], [2, 5])] == [
        sorted(s) for s in by_stream
    ]
    health = wb.health()
    assert (health.backlog, health.pending) == (7, 0)
    wb.read_batch("a", 10, partition=1)
    assert wb.health().pending == 3


def test_backpressure_is_per_partition(cache: CacheService) -> None:
    wb = parted(cache, max_backlog=6)  # 2 a partition: each step reads its own stream only
    wb.record([ActivityEvent(m, "login") for m in (3, 6)])  # partition 0 full
    with pytest.raises(Backpressure, match="at its limit of 2 a partition"):
        wb.record([ActivityEvent(9, "login")])
    assert len(wb.record([ActivityEvent(1, "login"), ActivityEvent(4, "login")])) == 2
    with pytest.raises(Backpressure, match="events of other partitions were recorded"):
        wb.record([ActivityEvent(2, "login"), ActivityEvent(12, "login")])
    assert [len(stream_ids(wb.client, s)) for s in wb.streams] == [2, 2, 1]


def test_partitions_flush_side_by_side_exactly_once(cache: CacheService, engine: Engine) -> None:
    wb = parted(cache, batch_size=50)
    base = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    expected: dict[int, list[int]] = {}
    for i in range(3000):
        member, kind = 1 + i % 37, ("login", "checkin", "page_view")[i % 3]
        at = base + dt.timedelta(milliseconds=i)
        wb.record([ActivityEvent(member, kind, at)])
        expected.setdefault(member, [0, 0, 0])[i % 3] += 1
    flushers = [Flusher(wb, sql_apply(engine), "f", p) for p in range(3)]
    drain_side_by_side(flushers, 30)
    assert db_totals(engine) == {m: tuple(v) for m, v in expected.items()}
    newest = {1 + i % 37: base + dt.timedelta(milliseconds=i) for i in range(3000)}
    assert db_last_seen(engine) == newest
    assert all(f.stats.events > 0 and f.stats.failures == 0 for f in flushers)
    assert [read_offset(engine, s) is not None for s in wb.streams] == [True] * 3
    assert wb.health().backlog == 0


def test_a_replayed_dead_letter_goes_back_to_its_members_partition(cache: CacheService) -> None:
    wb = parted(cache)
    wb.record([ActivityEvent(5, "checkin")])
    batch = wb.read_batch("a", 10, partition=2)
    wb.dead_letter([e.id for e in batch.events], "unknown member ids: 5", partition=2)
    (dead,) = wb.dead_letters()
    assert (dead["m"], dead["k"]) == ("5", "c")
    (new_id,) = wb.replay([dead["dead_id"]])
    assert stream_ids(wb.client, wb.streams[2]) == [new_id]
