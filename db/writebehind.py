"""Write-behind batches into the database, exactly once per stream position.

:func:`apply_batch` upserts a batch of coalesced activity rows (summed deltas per member and
day, newest sighting) and records the batch's last stream id in ``writebehind_offsets``, in
one transaction. The offset row is locked first, so two flushers of one stream are serialized
and each sees the other's committed offset:

    offset >= batch last id            applied before: nothing changes, returns False
    batch first id <= offset < last    a different cut of the same entries was applied:
                                       BatchOverlap(applied_through), nothing changes
    otherwise                          rows upserted, offset moved, returns True

Stream ids compare as (ms, seq) pairs, never as text. Rows of members that do not exist
raise UnknownMembers and nothing is written; the caller dead-letters them.

PostgreSQL upserts the batch (counts add up; a day's ``last_seen_at`` only moves forward) and
moves the offset, in one statement over ``unnest`` arrays (COPY into a temporary table and a
merge measured no faster: the time is the upsert, not the transfer). The members table is not
written: a member's last_seen_at is read from its newest day (db/queries.py), and updating
the wide members row as well halved the flush rate. No
existence check runs first: the foreign key of member_activity_daily refuses an unknown
member (an unknown member never has a row, so its row is always an insert and checked), the
transaction rolls back, and only then are the unknown ids looked up. Rows that carry
``columns()`` (cache.writebehind.ActivityRows) go out as integer arrays without a per-row
conversion. SQLite, the embedded fallback, checks first and uses executemany.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol, cast, runtime_checkable

from psycopg.errors import ForeignKeyViolation
from sqlalchemy import Connection, Engine, Table, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from db.errors import Conflict, InvalidData, translating
from db.models import Member, MemberActivityDaily, WritebehindOffset

# (member_id, day, logins, checkins, page_views, last_seen_at); cache.writebehind.ActivityRow.
Row = tuple[int, dt.date, int, int, int, dt.datetime]


@runtime_checkable
class Columnar(Protocol):
    """Rows that hand over their columns: member ids, days since 1970-01-01, logins,
    checkins, page views, last seen in microseconds since the epoch."""

    def columns(self) -> tuple[Sequence[int], ...]: ...


# Inside a flush transaction; far below the flusher's claim_idle_ms, so a stalled holder's
# transaction is gone before another consumer may take its entries over.
TX_TIMEOUT: Final = "30s"

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DAY: Final = dt.date(1970, 1, 1).toordinal()
_MICROSECOND: Final = dt.timedelta(microseconds=1)

_ACTIVITY = cast(Table, MemberActivityDaily.__table__)
_MEMBERS = cast(Table, Member.__table__)
_OFFSETS = cast(Table, WritebehindOffset.__table__)

_PG_UPSERT: Final = text("""
WITH r AS (
  SELECT u.member_id, DATE '1970-01-01' + u.day AS day, u.logins, u.checkins, u.page_views,
         TIMESTAMPTZ 'epoch' + u.seen_us * INTERVAL '1 microsecond' AS seen
  FROM unnest(CAST(:m AS bigint[]), CAST(:d AS int[]), CAST(:l AS int[]), CAST(:c AS int[]),
              CAST(:p AS int[]), CAST(:s AS bigint[]))
    AS u(member_id, day, logins, checkins, page_views, seen_us)
), up AS (
  INSERT INTO member_activity_daily AS a
    (member_id, day, logins, checkins, page_views, last_seen_at)
  SELECT member_id, day, logins, checkins, page_views, seen FROM r
  ON CONFLICT (member_id, day) DO UPDATE SET
    logins = a.logins + EXCLUDED.logins,
    checkins = a.checkins + EXCLUDED.checkins,
    page_views = a.page_views + EXCLUDED.page_views,
    last_seen_at = GREATEST(a.last_seen_at, EXCLUDED.last_seen_at)
  RETURNING 1
), moved AS (
  UPDATE writebehind_offsets SET last_id = :last WHERE stream = :stream RETURNING 1
)
SELECT (SELECT count(*) FROM up), (SELECT count(*) FROM moved)
""")
_PG_MISSING: Final = text("""
SELECT x FROM unnest(CAST(:ids AS bigint[])) AS x
WHERE NOT EXISTS (SELECT 1 FROM members WHERE members.id = x)
""")


class UnknownMembers(InvalidData):
    """Rows name members that do not exist; they can never be written."""

    def __init__(self, member_ids: Iterable[int]) -> None:
        self.member_ids = frozenset(member_ids)
        shown = ", ".join(map(str, sorted(self.member_ids)[:10]))
        super().__init__(f"unknown member ids: {shown}{'...' if len(self.member_ids) > 10 else ''}")


class BatchOverlap(Conflict):
    """The stream's offset falls inside the batch: part of it was applied by another cut."""

    def __init__(self, applied_through: str) -> None:
        self.applied_through = applied_through
        super().__init__(f"batch overlaps entries applied through {applied_through}")


def parse_stream_id(value: str) -> tuple[int, int]:
    """``"1700000000000-3"`` -> (1700000000000, 3); a bare ms means sequence 0."""
    ms, _, seq = value.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        raise InvalidData(f"not a stream id: {value!r}") from None


def read_offset(engine: Engine, stream: str) -> str | None:
    """The last stream id applied for ``stream``, or None before the first batch."""
    with translating(), engine.connect() as conn:
        query = select(_OFFSETS.c.last_id).where(_OFFSETS.c.stream == stream)
        value = conn.execute(query).scalar_one_or_none()
    return value


def apply_batch(
    engine: Engine,
    stream: str,
    batch_last_id: str,
    rows: Sequence[Row],
    *,
    batch_first_id: str | None = None,
) -> bool:
    """Apply the batch once (see the module docstring); False when it was applied before."""
    last = parse_stream_id(batch_last_id)
    first = parse_stream_id(batch_first_id) if batch_first_id is not None else None
    is_pg = engine.dialect.name == "postgresql"
    try:
        with translating(), engine.begin() as conn:
            if is_pg:
                conn.execute(
                    text("SELECT set_config('statement_timeout', :t, true),"
                         " set_config('idle_in_transaction_session_timeout', :t, true)"),
                    {"t": TX_TIMEOUT},
                )  # fmt: skip
            offset_text = _lock_offset(conn, stream, is_pg)
            offset = parse_stream_id(offset_text)
            if offset >= last:
                return False
            if first is not None and offset >= first:
                raise BatchOverlap(offset_text)
            if is_pg:
                _upsert_pg(conn, stream, batch_last_id, rows)
                return True
            if rows:
                if missing := _missing(conn, sorted({row[0] for row in rows})):
                    raise UnknownMembers(missing)
                _upsert_sqlite(conn, rows)
            conn.execute(
                update(_OFFSETS).where(_OFFSETS.c.stream == stream).values(last_id=batch_last_id)
            )
        return True
    except InvalidData as exc:
        if not is_pg or not _is_member_fk(exc):
            raise
        # Rolled back; which members are unknown (none now: a member created meanwhile).
        with translating(), engine.connect() as conn:
            missing = _missing_pg(conn, sorted({row[0] for row in rows}))
        raise (UnknownMembers(missing) if missing else exc) from exc.__cause__


def _is_member_fk(exc: InvalidData) -> bool:
    """The foreign key of member_activity_daily to members refused a row."""
    orig = getattr(exc.__cause__, "orig", exc.__cause__)
    return isinstance(orig, ForeignKeyViolation) and orig.diag.table_name == _ACTIVITY.name


def _lock_offset(conn: Connection, stream: str, is_pg: bool) -> str:
    """Create the offset row if missing and lock it; its current value.

    ON CONFLICT DO UPDATE takes the row lock and, under READ COMMITTED, returns the latest
    committed value: a second flusher waits here for the first one's commit.
    """
    dialect: Any = postgresql if is_pg else sqlite
    stmt = dialect.insert(_OFFSETS).values(stream=stream, last_id="0-0")
    stmt = stmt.on_conflict_do_update(
        index_elements=[_OFFSETS.c.stream], set_={"last_id": _OFFSETS.c.last_id}
    ).returning(_OFFSETS.c.last_id)
    return str(conn.execute(stmt).scalar_one())


def _array(values: Iterable[int]) -> str:
    """An integer array literal: one string, so psycopg does not adapt element by element."""
    return "{" + ",".join(map(str, values)) + "}"


def _missing_pg(conn: Connection, member_ids: list[int]) -> set[int]:
    return set(conn.execute(_PG_MISSING, {"ids": _array(member_ids)}).scalars())


def _missing(conn: Connection, member_ids: list[int]) -> set[int]:
    found: set[int] = set()
    for start in range(0, len(member_ids), 500):
        chunk = member_ids[start : start + 500]
        found.update(conn.execute(select(_MEMBERS.c.id).where(_MEMBERS.c.id.in_(chunk))).scalars())
    return set(member_ids) - found


def _upsert_pg(conn: Connection, stream: str, last_id: str, rows: Sequence[Row]) -> None:
    # Days and sightings travel as integers (days, microseconds since the epoch): exact.
    if isinstance(rows, Columnar):
        m, d, lo, c, p, s = rows.columns()
    else:
        m, lo, c, p = ([cast(int, r[i]) for r in rows] for i in (0, 2, 3, 4))
        d = [r[1].toordinal() - _EPOCH_DAY for r in rows]
        s = [(r[5] - _EPOCH) // _MICROSECOND for r in rows]
    params = {"m": _array(m), "d": _array(d), "l": _array(lo), "c": _array(c), "p": _array(p)}
    conn.execute(_PG_UPSERT, params | {"s": _array(s), "last": last_id, "stream": stream})


def _upsert_sqlite(conn: Connection, rows: Sequence[Row]) -> None:
    stmt = sqlite.insert(_ACTIVITY)
    stmt = stmt.on_conflict_do_update(
        index_elements=[_ACTIVITY.c.member_id, _ACTIVITY.c.day],
        set_={
            **{
                name: _ACTIVITY.c[name] + stmt.excluded[name]
                for name in ("logins", "checkins", "page_views")
            },
            # SQLite's two-argument max() is NULL when either is: keep the non-null one.
            "last_seen_at": func.max(
                func.coalesce(_ACTIVITY.c.last_seen_at, stmt.excluded.last_seen_at),
                stmt.excluded.last_seen_at,
            ),
        },
    )
    params = [
        {
            "member_id": r[0], "day": r[1], "logins": r[2], "checkins": r[3],
            "page_views": r[4], "last_seen_at": r[5],
        }
        for r in rows
    ]  # fmt: skip
    conn.execute(stmt, params)
