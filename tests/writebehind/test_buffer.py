"""The buffer on the real Redis: record, read in order, claim, acknowledge, dead-letter, health."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from cache import CacheService
from cache.writebehind import (
    GROUP,
    ActivityEvent,
    Backpressure,
    Flusher,
    GroupRecorder,
    InvalidEvent,
    WriteBehind,
    WriteBehindConfig,
)


def now_at(offset_ms: int = 0) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=offset_ms)


def test_record_counts_now_and_buffers_durably(wb: WriteBehind) -> None:
    at = now_at()
    ids = wb.record(
        [
            ActivityEvent(7, "login", at),
            ActivityEvent(7, "page_view", at, times=3),
            ActivityEvent(7, "checkin", at - dt.timedelta(days=1)),
        ]
    )
    assert len(ids) == 3
    got = wb.activity(7)
    today, yesterday = got["days"]
    assert (today["login"], today["checkin"], today["page_view"]) == (1, 0, 3)
    assert (yesterday["login"], yesterday["checkin"], yesterday["page_view"]) == (0, 1, 0)
    assert got["last_seen_at"] == at.replace(microsecond=at.microsecond // 1000 * 1000)
    client = wb.client
    assert client.xlen(wb.stream) == 3
    assert client.ttl(wb.stream) == -1  # durable: never a volatile-* eviction candidate
    counter = wb.counter_key(7, int(at.timestamp() * 1000) // 86_400_000)
    assert 0 < client.ttl(counter) <= wb.config.counter_ttl_s  # cache: may expire and evict


def test_last_seen_keeps_the_newest_sighting(wb: WriteBehind) -> None:
    at = now_at(-1000)
    wb.record([ActivityEvent(8, "page_view", at)])
    wb.record([ActivityEvent(8, "page_view", at - dt.timedelta(seconds=5))])
    assert wb.activity(8)["last_seen_at"] == at.replace(microsecond=at.microsecond // 1000 * 1000)


def test_invalid_events_are_refused_before_anything_is_written(wb: WriteBehind) -> None:
    for bad in (
        ActivityEvent(1, "purchase"),
        ActivityEvent(0, "login"),
        ActivityEvent(1, "login", now_at() - dt.timedelta(days=30)),
        ActivityEvent(1, "login", now_at() + dt.timedelta(hours=1)),
        ActivityEvent(1, "login", times=0),
    ):
        with pytest.raises(InvalidEvent):
            wb.record([ActivityEvent(1, "login"), bad])
    assert wb.client.xlen(wb.stream) == 0
    assert wb.activity(1)["days"] == []


def test_backpressure_refuses_the_whole_write_past_the_limit(cache: CacheService) -> None:
    wb = WriteBehind(cache.clients.writer, cache.keys, WriteBehindConfig(max_backlog=5))
    wb.record([ActivityEvent(1, "login")] * 4)
    with pytest.raises(Backpressure, match="at its limit of 5"):
        wb.record([ActivityEvent(1, "login")] * 2)
    assert wb.client.xlen(wb.stream) == 4
    assert wb.activity(1)["days"][0]["login"] == 4  # the refused write counted nothing
    wb.record([ActivityEvent(1, "login")])
    assert wb.health().saturated


def test_pending_entries_come_back_first_after_a_restart(wb: WriteBehind) -> None:
    ids = wb.record([ActivityEvent(1, "login") for _ in range(5)])
    first = wb.read_batch("a", 3)
    assert (first.source, [e.id for e in first.events]) == ("new", ids[:3])
    again = wb.read_batch("a", 10)  # the same consumer, restarted: its pending ones first
    assert (again.source, [e.id for e in again.events]) == ("pending", ids[:3])
    wb.ack(ids[:3])
    rest = wb.read_batch("a", 10)
    assert (rest.source, [e.id for e in rest.events]) == ("new", ids[3:])


def test_a_live_holder_blocks_others_until_it_goes_stale(wb: WriteBehind) -> None:
    ids = wb.record([ActivityEvent(2, "checkin") for _ in range(4)])
    assert len(wb.read_batch("a", 2).events) == 2
    busy = wb.read_batch("b", 10, min_idle_ms=60_000)
    assert (busy.source, busy.events) == ("busy", [])  # new entries wait: order is kept
    time.sleep(0.06)
    claimed = wb.claim_stale("b", min_idle_ms=50)
    assert (claimed.source, [e.id for e in claimed.events]) == ("pending", ids[:2])
    pending = wb.client.xpending_range(wb.stream, GROUP, "-", "+", 10)
    assert {p["consumer"] for p in pending} == {b"b"}


def test_claims_stop_at_the_first_fresh_entry(wb: WriteBehind) -> None:
    ids = wb.record([ActivityEvent(3, "login") for _ in range(4)])
    wb.read_batch("a", 4)
    time.sleep(0.06)
    assert [e.id for e in wb.read_batch("a", 1).events] == ids[:1]  # a touches its first one
    # ids[1:] are idle, but behind a fresh entry: taking them would break stream order.
    assert wb.claim_stale("b", min_idle_ms=50).events == []
    wb.ack(ids[:1])
    assert [e.id for e in wb.claim_stale("b", min_idle_ms=50).events] == ids[1:]


def test_ack_deletes_and_health_reports_backlog_pending_and_lag(wb: WriteBehind) -> None:
    ids = wb.record([ActivityEvent(4, "page_view") for _ in range(6)])
    time.sleep(0.2)
    wb.read_batch("a", 4)
    health = wb.health()
    assert (health.backlog, health.pending, health.dead_letters) == (6, 4, 0)
    assert 0.15 <= health.lag_seconds < 5
    wb.ack(ids[:4])
    health = wb.health()
    assert (health.backlog, health.pending) == (2, 0)
    wb.ack(ids[4:])  # never delivered: acknowledging them removes nothing
    assert wb.health().backlog == 2
    wb.ack([e.id for e in wb.read_batch("a", 4).events])
    assert (wb.health().backlog, wb.health().lag_seconds) == (0, 0.0)


def test_health_before_any_flusher_exists(cache: CacheService) -> None:
    wb = WriteBehind(cache.clients.writer, cache.keys, WriteBehindConfig())
    wb.record([ActivityEvent(1, "login")])
    health = wb.health()
    assert (health.backlog, health.pending) == (1, 0)


def test_dead_letters_are_listed_replayed_and_discarded(wb: WriteBehind) -> None:
    ids = wb.record([ActivityEvent(5, "login"), ActivityEvent(6, "checkin")])
    batch = wb.read_batch("a", 10)
    wb.dead_letter([e.id for e in batch.events], "unknown member ids: 5, 6")
    assert wb.client.xlen(wb.stream) == 0  # acknowledged and removed from the backlog
    dead = wb.dead_letters()
    assert [(d["id"], d["m"], d["k"], d["error"]) for d in dead] == [
        (ids[0], "5", "l", "unknown member ids: 5, 6"),
        (ids[1], "6", "c", "unknown member ids: 5, 6"),
    ]
    new_ids = wb.replay([dead[0]["dead_id"]])
    assert len(new_ids) == 1
    replayed = wb.read_batch("a", 10).events
    assert [(e.id, e.member_id, e.code) for e in replayed] == [(new_ids[0], 5, "l")]
    assert wb.discard([dead[1]["dead_id"]]) == 1
    assert wb.dead_letters() == []
    assert wb.activity(5)["days"][0]["login"] == 1  # replay does not count twice in the cache


def test_an_unparseable_entry_is_dead_lettered_not_stuck(wb: WriteBehind) -> None:
    wb.client.xadd(wb.stream, {"m": "nope"})
    good = wb.record([ActivityEvent(1, "login")])
    applied: list[list[str]] = []

    def apply(stream: str, first: str, last: str, rows: object) -> bool:
        applied.append([first, last])
        return True

    flusher = Flusher(wb, apply, "a")
    flusher.drain(2, until_empty=True)
    assert applied == [[good[0], good[0]]]
    assert [d["error"][:18] for d in wb.dead_letters()] == ["unparseable entry:"]


def test_group_recorder_shares_round_trips_and_keeps_callers_apart(wb: WriteBehind) -> None:
    recorder = GroupRecorder(wb)
    results: list[list[str]] = []
    refused: list[Exception] = []

    def caller(n: int) -> None:
        for i in range(100):
            if n == 0 and i == 50:
                try:
                    recorder.record([ActivityEvent(1, "nonsense")])
                except InvalidEvent as exc:
                    refused.append(exc)
            results.append(recorder.record([ActivityEvent(1 + n, "login")]))

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(refused) == 1  # only the caller with the bad event
    ids = [entry_id for got in results for entry_id in got]
    assert len(ids) == len(set(ids)) == 1600 == wb.client.xlen(wb.stream)
    assert all(len(got) == 1 for got in results)
    assert {wb.activity(1 + n)["days"][0]["login"] for n in range(16)} == {100}


def test_group_recorder_passes_backpressure_to_every_caller(cache: CacheService) -> None:
    wb = WriteBehind(cache.clients.writer, cache.keys, WriteBehindConfig(max_backlog=3))
    recorder = GroupRecorder(wb)
    assert len(recorder.record([ActivityEvent(1, "login")] * 3)) == 3
    with pytest.raises(Backpressure):
        recorder.record([ActivityEvent(1, "login")])
