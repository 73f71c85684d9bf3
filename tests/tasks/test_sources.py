"""SqlSource's member pages: PostgreSQL renders exactly what db.serialize.member gives."""

from __future__ import annotations

import datetime as dt

import orjson
from sqlalchemy import Engine, text

from db import members_after, session_factory, update_member
from tasks.sources import SqlSource


def _all_rendered(source: SqlSource, size: int) -> list[tuple[int, int, bytes]]:
    return [row for page in source.member_pages(size) for row in page]


def test_json_pages_equal_the_python_serialization(pg_engine: Engine) -> None:
    sessions = session_factory(pg_engine)
    with sessions.begin() as session:
        # Fractional seconds (every write through the API has them), a whole second, a null.
        update_member(session, 3, {"first_name": "Zoë"})
        session.execute(
            text("UPDATE members SET updated_at = :b, birth_date = NULL WHERE id = 4"),
            {"b": dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))},
        )
        # last_seen_at comes from the member's newest day of activity.
        session.execute(
            text(
                "INSERT INTO member_activity_daily (member_id, day, last_seen_at)"
                " VALUES (4, '2025-01-01', :old), (4, '2025-01-02', :a)"
            ),
            {
                "old": dt.datetime(2025, 1, 1, 9, 0, tzinfo=dt.UTC),
                "a": dt.datetime(2025, 1, 2, 3, 4, 5, 120, tzinfo=dt.UTC),
            },
        )
    source = SqlSource(pg_engine)
    rendered = _all_rendered(source, 64)
    with sessions() as session:
        expected = members_after(session, 0, 10_000)
    assert [orjson.loads(doc) for _, _, doc in rendered] == expected
    assert [(i, v) for i, v, _ in rendered] == [(m["id"], m["version"]) for m in expected]
    fractional = next(orjson.loads(doc) for i, _, doc in rendered if i == 4)
    assert fractional["last_seen_at"] == "2025-01-02T03:04:05.000120+00:00"
    assert fractional["updated_at"] == "2025-01-02T01:04:05+00:00"
    assert fractional["birth_date"] is None


def test_json_pages_ignore_the_session_time_zone(pg_engine: Engine) -> None:
    with pg_engine.connect() as conn:
        database = conn.execute(text("SELECT current_database()")).scalar_one()
        conn.execute(text(f"ALTER DATABASE \"{database}\" SET timezone TO 'Asia/Tokyo'"))
        conn.commit()
    pg_engine.dispose()  # new connections pick the database default up
    try:
        rows = next(SqlSource(pg_engine).member_pages(5))
        assert all(b"+09:00" not in doc for _, _, doc in rows)
    finally:
        with pg_engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" RESET timezone'))
            conn.commit()
        pg_engine.dispose()
