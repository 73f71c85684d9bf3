"""The embedded default: the same migration, seed and queries on a SQLite file."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from db import (
    analytics_dashboard,
    demographics,
    get_member,
    list_members,
    make_engine,
    seed,
    session_factory,
    update_member,
    upgrade,
)
from db.analytics import member_growth
from tasks.sources import SqlSource


def test_migrate_seed_and_query(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'membership.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        report = seed(engine, 300, progress=False, now=dt.datetime(2025, 6, 15, tzinfo=dt.UTC))
        assert (report.dialect, report.members) == ("sqlite", 300)
        assert 600 < report.payments < 1200
        with session_factory(engine).begin() as session:
            member = get_member(session, 1)
            assert member is not None and member["id"] == 1
            assert member["joined_at"].endswith("+00:00")
            version = member["version"]
            updated = update_member(session, 1, {"tier": "gold"}, expected_version=version)
            assert updated is not None and updated["version"] == member["version"] + 1
            assert list_members(session, page_size=5)["total"] == 300
            board = analytics_dashboard(session, now=dt.datetime(2025, 6, 15, tzinfo=dt.UTC))
            assert board["members"]["total"] == 300
            assert sum(row["joins"] for row in board["joins_per_month"]) > 0
            assert any(row["total"] != "0.00" for row in board["revenue_per_month"])
            assert demographics(session)["total"] == 300
            growth = member_growth(session, now=dt.datetime(2025, 6, 15, tzinfo=dt.UTC))
            assert sum(rows["months"][-1]["members"] for rows in growth["tiers"]) == 300
            json.dumps(board)
        # The warm-up's version re-check: member 1 moved on (its update is committed), member
        # 2 did not, member 999 does not exist.
        with session_factory(engine)() as session:
            second = get_member(session, 2)
        assert second is not None
        stored = [(1, version), (2, second["version"]), (999, 1)]
        assert SqlSource(engine).overtaken(stored) == [1, 999]
        # Re-seeding replaces, it does not add.
        assert seed(engine, 50, progress=False).members == 50
        with session_factory(engine)() as session:
            assert list_members(session)["total"] == 50
    finally:
        engine.dispose()
