"""Batches into the real PostgreSQL: exactly once per stream position, newest sighting kept."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from cache.writebehind import (
    ActivityEvent,
    ActivityRow,
    Flusher,
    Unwritable,
    WriteBehind,
    WriteBehindConfig,
)
from db import make_engine, upgrade
from db.models import Member
from db.queries import LAST_SEEN_AT
from db.seed import seed
from db.writebehind import BatchOverlap, UnknownMembers, apply_batch, read_offset
from tasks.writebehind import sql_apply
from tests.writebehind.support import db_totals

D0 = dt.date(2025, 6, 15)
AT = dt.datetime(2025, 6, 15, 10, 0, tzinfo=dt.UTC)
STREAM = "test:wb:stream"


def last_seen(engine: Engine, member_id: int) -> dt.datetime | None:
    """The member's last_seen_at as every member read gives it (its newest day's)."""
    with engine.connect() as conn:
        query = select(LAST_SEEN_AT).select_from(Member).where(Member.id == member_id)
        return conn.execute(query).scalar_one()


def rows_of(*items: tuple[int, int, int, int]) -> list[ActivityRow]:
    return [ActivityRow(m, D0, lo, c, p, AT) for m, lo, c, p in items]


def test_the_same_batch_applied_twice_counts_once(engine: Engine) -> None:
    rows = rows_of((1, 2, 0, 5), (2, 0, 1, 0))
    assert apply_batch(engine, STREAM, "1000-3", rows, batch_first_id="1000-0") is True
    assert apply_batch(engine, STREAM, "1000-3", rows, batch_first_id="1000-0") is False
    assert db_totals(engine) == {1: (2, 0, 5), 2: (0, 1, 0)}
    assert read_offset(engine, STREAM) == "1000-3"
    assert apply_batch(engine, STREAM, "1001-0", rows_of((1, 1, 0, 0))) is True
    assert db_totals(engine)[1] == (3, 0, 5)  # a later batch adds its deltas


def test_offsets_compare_as_numbers(engine: Engine) -> None:
    assert apply_batch(engine, STREAM, "10000-0", rows_of((1, 1, 0, 0)))
    assert not apply_batch(engine, STREAM, "9999-5", rows_of((1, 1, 0, 0)))  # "9999" > "10000"
    assert db_totals(engine) == {1: (1, 0, 0)}


def test_an_overlapping_cut_is_refused_whole(engine: Engine) -> None:
    apply_batch(engine, STREAM, "50-0", rows_of((1, 1, 0, 0)), batch_first_id="10-0")
    with pytest.raises(BatchOverlap) as raised:
        apply_batch(engine, STREAM, "90-0", rows_of((1, 9, 0, 0)), batch_first_id="30-0")
    assert raised.value.applied_through == "50-0"
    assert db_totals(engine) == {1: (1, 0, 0)}


def test_unknown_members_are_refused_before_anything_is_written(engine: Engine) -> None:
    with pytest.raises(UnknownMembers) as raised:
        apply_batch(engine, STREAM, "5-0", rows_of((1, 1, 0, 0), (999_999, 1, 0, 0)))
    assert raised.value.member_ids == {999_999}
    assert db_totals(engine) == {}
    assert read_offset(engine, STREAM) is None


def test_last_seen_only_moves_forward(engine: Engine) -> None:
    later, earlier = AT + dt.timedelta(hours=1), AT - dt.timedelta(hours=1)
    apply_batch(engine, STREAM, "1-0", [ActivityRow(3, D0, 1, 0, 0, later)])
    apply_batch(engine, STREAM, "2-0", [ActivityRow(3, D0, 1, 0, 0, earlier)])
    assert last_seen(engine, 3) == later
    # A later day's row holds the newest sighting; an older day's late event moves nothing.
    next_day = later + dt.timedelta(days=1)
    apply_batch(engine, STREAM, "3-0", [ActivityRow(3, next_day.date(), 0, 1, 0, next_day)])
    late = later + dt.timedelta(minutes=5)
    apply_batch(engine, STREAM, "4-0", [ActivityRow(3, D0, 1, 0, 0, late)])
    assert last_seen(engine, 3) == next_day


def test_the_flusher_skips_what_another_cut_applied(wb: WriteBehind, engine: Engine) -> None:
    ids = wb.record([ActivityEvent(1, "login") for _ in range(6)])
    # A stalled holder committed the first four entries under its own cut, then died.
    apply_batch(engine, wb.stream, ids[3], rows_of((1, 4, 0, 0)), batch_first_id=ids[0])
    flusher = Flusher(wb, sql_apply(engine), "b")
    flusher.drain(5, until_empty=True)
    assert db_totals(engine) == {1: (6, 0, 0)}
    assert flusher.stats.overlaps == 1
    assert wb.health().backlog == 0


def test_events_of_unknown_members_are_dead_lettered(wb: WriteBehind, engine: Engine) -> None:
    wb.record([ActivityEvent(1, "login"), ActivityEvent(424_242, "login")])
    wb.record([ActivityEvent(2, "checkin")])
    flusher = Flusher(wb, sql_apply(engine), "a")
    flusher.drain(5, until_empty=True)
    assert db_totals(engine) == {1: (1, 0, 0), 2: (0, 1, 0)}
    (dead,) = wb.dead_letters()
    assert (dead["m"], dead["error"]) == ("424242", "unknown member ids: 424242")
    assert wb.health().backlog == 0


def test_a_batch_that_keeps_failing_is_halved_down_to_the_culprit(
    wb: WriteBehind, engine: Engine
) -> None:
    ids = wb.record([ActivityEvent(1, "login") for _ in range(8)])
    apply = sql_apply(engine)
    bad = ids[5]

    def picky(stream: str, first: str, last: str, rows: Sequence[ActivityRow]) -> bool:
        if first <= bad <= last:
            raise Unwritable((), "value out of range")
        return apply(stream, first, last, rows)

    Flusher(wb, picky, "a").drain(5, until_empty=True)
    assert db_totals(engine) == {1: (7, 0, 0)}
    assert [d["id"] for d in wb.dead_letters()] == [bad]


def test_two_flushers_end_with_the_newest_sighting(wb: WriteBehind, engine: Engine) -> None:
    base = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    newest = base + dt.timedelta(milliseconds=999)
    errors: list[BaseException] = []
    small = WriteBehind(
        wb.client, wb.keys, WriteBehindConfig(batch_size=7, linger_ms=0, block_ms=5)
    )
    flushers = [Flusher(small, sql_apply(engine), name) for name in ("one", "two")]
    stop = threading.Event()

    def run(flusher: Flusher) -> None:
        try:
            while not stop.is_set():
                flusher.flush_once()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f,)) for f in flushers]
    for thread in threads:
        thread.start()
    try:
        for i in range(1000):  # rapid sightings of one member, each newer than the last
            wb.record([ActivityEvent(1, "page_view", base + dt.timedelta(milliseconds=i))])
    finally:
        Flusher(wb, sql_apply(engine), "one").drain(10, until_empty=True)
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors
    assert last_seen(engine, 1) == newest
    assert db_totals(engine) == {1: (0, 0, 1000)}
    assert all(f.stats.batches > 0 for f in flushers), "both flushers took part"


def test_sqlite_applies_exactly_once_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wb.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        seed(engine, 5, progress=False)
        rows = [ActivityRow(1, D0, 1, 2, 3, AT), ActivityRow(2, D0, 0, 0, 1, AT)]
        assert apply_batch(engine, STREAM, "7-1", rows)
        assert not apply_batch(engine, STREAM, "7-1", rows)
        later = AT + dt.timedelta(seconds=1)
        assert apply_batch(engine, STREAM, "8-0", [ActivityRow(1, D0, 1, 0, 0, later)])
        assert db_totals(engine) == {1: (2, 2, 3), 2: (0, 0, 1)}
        assert last_seen(engine, 1) == later.replace(tzinfo=None)
        with pytest.raises(UnknownMembers):
            apply_batch(engine, STREAM, "9-0", [ActivityRow(77, D0, 1, 0, 0, AT)])
    finally:
        engine.dispose()


def test_a_restart_resumes_every_batch_it_held_in_order(wb: WriteBehind, engine: Engine) -> None:
    small = WriteBehind(wb.client, wb.keys, WriteBehindConfig(batch_size=4, linger_ms=0))
    small.record([ActivityEvent(1, "login") for _ in range(10)])
    first = small.read_batch("a", 4)
    second = small.read_batch("a", 4, after=first.events[-1].id)  # read ahead, as drain does
    assert [e.id for e in second.events] > [e.id for e in first.events]
    # The first batch committed, then the process died before acknowledging either batch.
    apply_batch(engine, small.stream, first.events[-1].id, rows_of((1, 4, 0, 0)))
    flusher = Flusher(small, sql_apply(engine), "a")
    flusher.drain(10, until_empty=True)
    assert db_totals(engine) == {1: (10, 0, 0)}
    assert flusher.stats.replayed_batches == 1
    assert small.health().backlog == 0
