"""The pure parts: coalescing, entry parsing, stream id order (no Redis, no database)."""

from __future__ import annotations

import datetime as dt

from cache.writebehind import ActivityRow, StreamEvent, coalesce, parse_entries, stream_id

DAY = 86_400_000
T0 = 1_750_000_000_000  # 2025-06-15T15:06:40Z
D0 = dt.date(2025, 6, 15)


def ev(entry_id: str, member: int, code: str, at_ms: int, times: int = 1) -> StreamEvent:
    return StreamEvent(entry_id, member, code, at_ms, times)


def test_many_events_of_one_member_day_become_one_row() -> None:
    events = [
        ev("1-0", 7, "l", T0),
        ev("2-0", 7, "p", T0 + 5, 3),
        ev("3-0", 7, "p", T0 + 2),
        ev("4-0", 7, "c", T0 - 9),
    ]
    seen = dt.datetime.fromtimestamp((T0 + 5) / 1000, dt.UTC)
    assert coalesce(events) == [ActivityRow(7, D0, 1, 1, 4, seen)]


def test_days_and_members_stay_apart_and_come_sorted() -> None:
    events = [ev("1-0", 9, "l", T0 + DAY), ev("2-0", 3, "l", T0), ev("3-0", 9, "c", T0)]
    rows = coalesce(events)
    assert [(r.member_id, r.day) for r in rows] == [
        (3, D0),
        (9, D0),
        (9, D0 + dt.timedelta(days=1)),
    ]
    assert [(r.logins, r.checkins) for r in rows] == [(1, 0), (0, 1), (1, 0)]


def test_last_seen_is_the_newest_whatever_the_order() -> None:
    events = [ev(f"{i}-0", 1, "p", T0 + (i * 7919) % 1000) for i in range(1, 1001)]
    (row,) = coalesce(events)
    assert row.page_views == 1000
    newest = max(e.at_ms for e in events)
    assert row.last_seen_at == dt.datetime.fromtimestamp(newest / 1000, dt.UTC)


def test_day_boundary_is_utc_midnight() -> None:
    midnight = (T0 // DAY + 1) * DAY
    rows = coalesce([ev("1-0", 1, "l", midnight - 1), ev("2-0", 1, "l", midnight)])
    assert [r.day for r in rows] == [D0, D0 + dt.timedelta(days=1)]


def test_empty_batch_has_no_rows() -> None:
    assert coalesce([]) == []


def test_stream_ids_order_as_number_pairs_not_text() -> None:
    assert stream_id("9999-0") < stream_id("10000-0")
    assert stream_id("5-10") > stream_id("5-9")
    assert stream_id("42") == (42, 0)


def test_parse_entries_sets_aside_what_does_not_parse() -> None:
    raw = [
        [b"1-0", [b"m", b"5", b"k", b"l", b"t", b"100", b"n", b"2"]],
        [b"2-0", [b"m", b"x", b"k", b"l", b"t", b"100", b"n", b"1"]],
        [b"3-0", [b"m", b"5", b"k", b"zz", b"t", b"100", b"n", b"1"]],
        [b"4-0", [b"m", b"5"]],
        None,
    ]
    events, rejects = parse_entries(raw)
    assert events == [StreamEvent("1-0", 5, "l", 100, 2)]
    assert [entry_id for entry_id, _ in rejects] == ["2-0", "3-0", "4-0"]
