"""db/reports.py through SqlRecords, on PostgreSQL: snapshots in time order, reports by period."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, delete

from db import reports, session_factory
from db.models import MaintenanceReport, MetricsSnapshot
from tasks.records import SqlRecords

T0 = dt.datetime(2031, 5, 1, tzinfo=dt.UTC)


@pytest.fixture
def records(pg_engine: Engine) -> Iterator[SqlRecords]:
    with session_factory(pg_engine).begin() as session:
        session.execute(delete(MetricsSnapshot))
        session.execute(delete(MaintenanceReport))
    yield SqlRecords(pg_engine)


def payload(used: int, maxmemory: int = 1000) -> dict[str, Any]:
    return {"redis": {"used_memory": used, "maxmemory": maxmemory}, "processes": {}}


def test_snapshots_fold_in_time_order_with_the_baseline(records: SqlRecords) -> None:
    for minute in (0, 3, 1, 2):  # stored out of order
        records.add_snapshot(T0 + dt.timedelta(minutes=minute), payload(100 + minute))

    def fold(base: dict[str, Any] | None, rows: Iterator[dict[str, Any]]) -> list[int]:
        assert base is not None
        return [base["payload"]["redis"]["used_memory"]] + [
            row["payload"]["redis"]["used_memory"] for row in rows
        ]

    window = (T0 + dt.timedelta(minutes=1), T0 + dt.timedelta(minutes=3))
    assert records.fold_snapshots(*window, fold) == [100, 101, 102]
    assert records.memory_series(T0, T0 + dt.timedelta(hours=1)) == [
        (T0 + dt.timedelta(minutes=m), 100 + m, 1000) for m in range(4)
    ]
    latest = records.latest_snapshot()
    assert latest is not None and latest["taken_at"] == "2031-05-01T00:03:00+00:00"
    assert records.prune_snapshots(T0 + dt.timedelta(minutes=2)) == 2
    assert [u for _, u, _ in records.memory_series(T0, T0 + dt.timedelta(hours=1))] == [102, 103]


def test_a_report_is_one_row_per_job_and_period(records: SqlRecords, pg_engine: Engine) -> None:
    first = records.save_report("daily_report", "2031-05-01", "ok", {"n": 1}, None)
    again = records.save_report("daily_report", "2031-05-01", "alert", {"n": 2}, "low hit rate")
    assert again["id"] == first["id"]
    assert (again["status"], again["alert"], again["payload"]) == (
        "alert",
        "low hit rate",
        {"n": 2},
    )
    records.save_report("daily_report", "2031-05-02", "ok", {"n": 3}, None)
    records.save_report("quarterly_audit", "2031-Q2", "no_data", {}, "nothing")
    with session_factory(pg_engine)() as session:
        daily = reports.list_reports(session, "daily_report")
        assert [r["period"] for r in daily] == ["2031-05-02", "2031-05-01"]
        latest = reports.latest_reports(session)
        assert set(latest) == {"daily_report", "quarterly_audit"}
        assert latest["daily_report"]["period"] == "2031-05-02"
        assert reports.get_report(session, "daily_backup", "2031-05-01") is None
        assert len(reports.list_reports(session)) == 3


@pytest.mark.parametrize(
    ("job", "status"),
    [("daily_reports", "ok"), ("daily_report", "fine"), ("", "ok")],
)
def test_unknown_jobs_and_statuses_are_refused(records: SqlRecords, job: str, status: str) -> None:
    with pytest.raises(ValueError):
        records.save_report(job, "2031-05-01", status, {}, None)
