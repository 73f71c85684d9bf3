"""db/audit.py and its migration: entries opened, closed, recorded, listed newest first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect
from sqlalchemy.orm import Session

from db import audit
from db.engine import make_engine
from db.errors import NotFound
from db.migrate import current_revision, downgrade, head_revision, upgrade
from db.models import Base


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def test_open_close_record_and_list(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        opened = audit.open_entry(session, "ops-1", "operator", "cache.warmup", {"kind": "all"})
        refused = audit.record(
            session, "ops-1", "operator", "cache.clear", {"pattern": "*"}, 403, {"error": "role"}
        )
        audit.close_entry(session, opened, 202, {"task_id": "abc"})
        with pytest.raises(NotFound):
            audit.close_entry(session, 10**12, 200, {})
        mine = audit.entries(session, who="ops-1")
        assert [e["id"] for e in mine] == [refused, opened]
        assert mine[1]["status"] == 202 and mine[1]["result"] == {"task_id": "abc"}
        assert mine[1]["finished_at"] is not None and mine[1]["at"].endswith("+00:00")
        assert [e["id"] for e in audit.entries(session, who="ops-1", before_id=refused)] == [opened]
        assert audit.entries(session, action="cache.clear", who="ops-1")[0]["status"] == 403
        session.rollback()


def test_the_migration_matches_the_model(engine: Engine) -> None:
    assert "management_audit" in inspect(engine).get_table_names()
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs = compare_metadata(context, Base.metadata)
    assert [d for d in diffs if "management_audit" in repr(d)] == []


def test_the_migration_goes_down_and_up_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    assert current_revision(url) == head_revision()
    downgrade(url, "0002")
    sqlite = make_engine(url)
    try:
        assert "management_audit" not in inspect(sqlite).get_table_names()
    finally:
        sqlite.dispose()
    upgrade(url, "0003")
    assert current_revision(url) == "0003"
