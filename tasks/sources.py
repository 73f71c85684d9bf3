"""Where warm-ups read from: the :class:`Source` protocol and its database implementation.

The only module of tasks/ that touches the data layer. Values come from db.queries, so a
warmed key holds exactly what the API's read path would have stored for it.

What is warmed, and with which query, is each kind's declaration (cache.kinds: ``query``
names a function of db/, ``variants`` its arguments); :meth:`Source.load` runs it.

Warming every member reads them as JSON rendered by PostgreSQL (``row_to_json``): a million
members are a million small dicts otherwise, and building and serializing those in Python
costs more than everything else in a warm-up together. The SQL renders exactly what
db.serialize.member gives (ISO dates, UTC timestamps with "+00:00", microseconds only when
there are any); tests/tasks/test_sources.py holds the two to equality. On SQLite the rows are
serialized in Python.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final, Protocol, cast

import orjson
import psycopg
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cache.kinds import Kind
from config import Settings
from db import make_engine, queries, resolve_database_url, session_factory

Member = dict[str, Any]
# (id, version, the member as JSON bytes, as db.serialize.member renders it)
MemberRow = tuple[int, int, bytes]


def _utc_json(column: str) -> str:
    # to_json(timestamptz) is ISO with the session's offset (set to UTC below) and trims
    # trailing zeros of fractional seconds; Python's isoformat prints six digits, so those
    # rows are rendered with to_char instead.
    return (
        f"CASE WHEN date_trunc('second', {column}) = {column} THEN to_json({column}) "
        f"ELSE to_json(to_char({column} AT TIME ZONE 'UTC', "
        f'\'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"\')) END AS {column}'
    )


# Run on the driver's own cursor in binary mode (bytea comes back as bytes, ints as ints):
# SQLAlchemy's row handling would cost more than the query.
# Built from constants only; the two values are bound parameters.
# last_seen_at is the member's newest day of activity (db/queries.py LAST_SEEN_AT).
MEMBER_JSON_SQL: Final = (
    "SELECT m.id, m.version, convert_to(row_to_json(m)::text, 'UTF8') FROM ("  # noqa: S608
    "SELECT id, email, first_name, last_name, status, tier, country, birth_date, "
    f"{_utc_json('joined_at')}, {_utc_json('updated_at')}, {_utc_json('last_seen_at')}, "
    "version FROM (SELECT members.*, (SELECT a.last_seen_at FROM member_activity_daily AS a"
    " WHERE a.member_id = members.id AND a.last_seen_at IS NOT NULL"
    " ORDER BY a.day DESC LIMIT 1) AS last_seen_at"
    " FROM members WHERE id > %(after)s AND id <= %(upto)s ORDER BY id LIMIT %(size)s)"
    " AS members"
    " ORDER BY id) AS m"
)


# The members among (id, version) pairs whose row is gone or holds another version now: one
# index lookup per pair, and only the (rare) overtaken ids come back. Run like the page query
# above: the ORM's IN with 5,000 bound ids cost 13-15 us of worker CPU per key, more than the
# whole rest of a warm-up; the arrays go as text literals ("{1,2,3}"), which psycopg sends as
# they are (its list dumper cost 2-4 us per key).
OVERTAKEN_SQL: Final = (
    "SELECT w.id FROM unnest(%(ids)s::text::bigint[], %(versions)s::text::bigint[])"
    " AS w(id, version)"
    " LEFT JOIN members AS m ON m.id = w.id WHERE m.id IS NULL OR m.version <> w.version"
)

_NO_UPPER_BOUND: Final = 2**63 - 1  # the largest bigint: every member id is below it


class Source(Protocol):
    """Read side of warm-ups. Every method is one query unless it says otherwise."""

    def load(self, kind: Kind, params: Sequence[Any] = ()) -> Any:
        """What ``kind`` holds for ``params``: its declared query."""
        ...

    def hottest_member_ids(self, limit: int) -> list[int]: ...

    def count_members(self) -> int: ...

    def member_id_bounds(self) -> tuple[int, int] | None:
        """The lowest and highest member id; None without members."""
        ...

    def members(self, ids: Iterable[int]) -> dict[int, Member]:
        """The members among ``ids`` that exist, by id (one query per 5,000 ids)."""
        ...

    def overtaken(self, stored: Sequence[tuple[int, int]]) -> list[int]:
        """Of (member id, version) pairs, the ids whose row is gone or has another version."""
        ...

    def member_pages(
        self, size: int, *, after: int = 0, upto: int | None = None
    ) -> Iterator[list[MemberRow]]:
        """Every member with ``after`` < id <= ``upto`` (no upper bound: None) in id order as
        JSON rows, ``size`` at a time, one keyset query per page."""
        ...

    def close(self) -> None: ...


def _array(numbers: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers: ``{1,2,3}``."""
    return "{" + ",".join(map(str, numbers)) + "}"


def query_of(kind: Kind) -> Callable[..., Any]:
    """The function of db/ a kind declares (``Kind.query``: "<module>.<function>")."""
    module, _, name = (kind.query or "").rpartition(".")
    try:
        query = getattr(importlib.import_module(f"db.{module}"), name, None) if module else None
    except ImportError:
        query = None
    if not callable(query) or name.startswith("_"):
        raise ValueError(f"kind {kind.name!r} names no query of db/: {kind.query!r}")
    return cast(Callable[..., Any], query)


class SqlSource:
    """:class:`Source` over db/: one engine per worker process, one session per call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions: sessionmaker[Session] = session_factory(engine)

    @classmethod
    def from_settings(cls, settings: Settings) -> SqlSource:
        return cls(make_engine(resolve_database_url(settings)))

    def load(self, kind: Kind, params: Sequence[Any] = ()) -> Any:
        with self._sessions() as session:
            return query_of(kind)(session, *params)

    def hottest_member_ids(self, limit: int) -> list[int]:
        with self._sessions() as session:
            return queries.hottest_member_ids(session, limit)

    def count_members(self) -> int:
        with self._sessions() as session:
            return queries.count_members(session)

    def member_id_bounds(self) -> tuple[int, int] | None:
        with self._sessions() as session:
            return queries.member_id_bounds(session)

    def members(self, ids: Iterable[int]) -> dict[int, Member]:
        with self._sessions() as session:
            return queries.members_by_ids(session, ids)

    def overtaken(self, stored: Sequence[tuple[int, int]]) -> list[int]:
        if not stored:
            return []
        with self._sessions() as session:
            if self.engine.dialect.name != "postgresql":
                now = queries.member_versions(session, (i for i, _ in stored))
                return [i for i, version in stored if now.get(i) != version]
            driver = cast(psycopg.Connection[Any], session.connection().connection.dbapi_connection)
            ids, versions = zip(*stored, strict=True)
            arrays = {"ids": _array(ids), "versions": _array(versions)}
            with driver.cursor(binary=True) as cursor:
                cursor.execute(OVERTAKEN_SQL, arrays)
                return [int(row[0]) for row in cursor.fetchall()]

    def member_pages(
        self, size: int, *, after: int = 0, upto: int | None = None
    ) -> Iterator[list[MemberRow]]:
        last = _NO_UPPER_BOUND if upto is None else upto
        while after < last:
            with self._sessions() as session:  # one short transaction per page
                page = self._json_page(session, after, last, size)
            if not page:
                return
            yield page
            after = page[-1][0]

    def _json_page(self, session: Session, after: int, upto: int, size: int) -> list[MemberRow]:
        if self.engine.dialect.name != "postgresql":
            members = [m for m in queries.members_after(session, after, size) if m["id"] <= upto]
            return [(m["id"], m["version"], orjson.dumps(m)) for m in members]
        driver = cast(psycopg.Connection[Any], session.connection().connection.dbapi_connection)
        with driver.cursor(binary=True) as cursor:
            cursor.execute("SET LOCAL TIME ZONE 'UTC'")  # to_json renders this offset
            cursor.execute(MEMBER_JSON_SQL, {"after": after, "upto": upto, "size": size})
            return [(i, v, bytes(doc)) for i, v, doc in cursor.fetchall()]

    def close(self) -> None:
        self.engine.dispose()
