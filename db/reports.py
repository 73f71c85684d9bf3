"""Metrics snapshots and maintenance reports, as plain functions over a Session.

Written by the Celery jobs (tasks/metrics.py, tasks/maintenance.py), read by the API and by
the jobs that look back over a period. Like db.queries, writes run in the caller's
transaction and do not commit, and every function returns JSON-ready values::

    snapshot  {"id", "taken_at": ISO, "payload": {...}}
    report    {"id", "job", "period", "created_at": ISO, "status", "alert", "payload": {...}}

A report is keyed by (job, period): saving one again for the same period replaces it, so a
re-run of a job can only converge, never duplicate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, Final

from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db import serialize
from db.errors import translating
from db.models import MaintenanceReport, MetricsSnapshot
from workers.routing import REPORT_JOBS

__all__ = [
    "JOBS",
    "STATUSES",
    "add_snapshot",
    "get_report",
    "iter_snapshots",
    "latest_reports",
    "latest_snapshot",
    "list_reports",
    "memory_series",
    "prune_snapshots",
    "save_report",
    "snapshot_before",
]

# The maintenance jobs that store reports: the routing table's (workers/routing.py, which
# imports nothing of the project), where each job's TaskSpec says it reports.
JOBS: Final = REPORT_JOBS
STATUSES: Final = ("ok", "alert", "no_data", "failed")
MAX_LIST: Final = 500


def _snapshot(row: MetricsSnapshot) -> dict[str, Any]:
    return {
        "id": row.id,
        "taken_at": serialize.iso_datetime(row.taken_at),
        "payload": row.payload,
    }


def _report(row: MaintenanceReport) -> dict[str, Any]:
    return {
        "id": row.id,
        "job": row.job,
        "period": row.period,
        "created_at": serialize.iso_datetime(row.created_at),
        "status": row.status,
        "alert": row.alert,
        "payload": row.payload,
    }


# --- snapshots --------------------------------------------------------------------------------
def add_snapshot(session: Session, taken_at: dt.datetime, payload: dict[str, Any]) -> int:
    """Store one snapshot; its id."""
    with translating():
        row = MetricsSnapshot(taken_at=taken_at, payload=payload)
        session.add(row)
        session.flush()
        return row.id


def prune_snapshots(session: Session, before: dt.datetime) -> int:
    """Delete the snapshots taken before ``before``; how many."""
    with translating():
        result = session.execute(delete(MetricsSnapshot).where(MetricsSnapshot.taken_at < before))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def latest_snapshot(session: Session) -> dict[str, Any] | None:
    with translating():
        row = session.scalars(
            select(MetricsSnapshot).order_by(MetricsSnapshot.taken_at.desc()).limit(1)
        ).first()
        return _snapshot(row) if row is not None else None


def snapshot_before(session: Session, when: dt.datetime) -> dict[str, Any] | None:
    """The last snapshot taken before ``when``: the baseline of counters over a window."""
    with translating():
        row = session.scalars(
            select(MetricsSnapshot)
            .where(MetricsSnapshot.taken_at < when)
            .order_by(MetricsSnapshot.taken_at.desc())
            .limit(1)
        ).first()
        return _snapshot(row) if row is not None else None


def iter_snapshots(
    session: Session, start: dt.datetime, end: dt.datetime, *, batch: int = 500
) -> Iterator[dict[str, Any]]:
    """Snapshots taken in [start, end), oldest first, ``batch`` rows fetched at a time.

    A week of minute snapshots is ten thousand rows: they are streamed, never all loaded.
    """
    stmt = (
        select(MetricsSnapshot)
        .where(MetricsSnapshot.taken_at >= start, MetricsSnapshot.taken_at < end)
        .order_by(MetricsSnapshot.taken_at)
        .execution_options(yield_per=batch)
    )
    with translating():
        for row in session.scalars(stmt):
            yield _snapshot(row)


def memory_series(
    session: Session, start: dt.datetime, end: dt.datetime
) -> list[tuple[dt.datetime, int, int]]:
    """(taken_at, used_memory, maxmemory) of the snapshots in [start, end), oldest first.

    Extracted by the database from the JSON payload, so a month of snapshots costs a month of
    three numbers, not a month of payloads.
    """
    redis_info = MetricsSnapshot.payload["redis"]
    used = redis_info["used_memory"].as_integer()
    limit = redis_info["maxmemory"].as_integer()
    stmt = (
        select(MetricsSnapshot.taken_at, used, limit)
        .where(MetricsSnapshot.taken_at >= start, MetricsSnapshot.taken_at < end)
        .order_by(MetricsSnapshot.taken_at)
    )
    with translating():
        return [
            (_utc(taken_at), int(u), int(m or 0))
            for taken_at, u, m in session.execute(stmt)
            if u is not None
        ]


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# --- reports ----------------------------------------------------------------------------------
def save_report(
    session: Session,
    job: str,
    period: str,
    status: str,
    payload: dict[str, Any],
    alert: str | None = None,
) -> dict[str, Any]:
    """Insert or replace the report of (job, period); the stored report."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; expected one of {JOBS}")
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; expected one of {STATUSES}")
    values = {"job": job, "period": period, "status": status, "alert": alert, "payload": payload}
    dialect = session.get_bind().dialect.name
    upsert: Any
    if dialect == "postgresql":
        upsert = postgresql.insert(MaintenanceReport).values(values)
    elif dialect == "sqlite":
        upsert = sqlite.insert(MaintenanceReport).values(values)
    else:  # pragma: no cover - the two supported databases are above
        upsert = insert(MaintenanceReport).values(values)
    if dialect in ("postgresql", "sqlite"):
        upsert = upsert.on_conflict_do_update(
            index_elements=["job", "period"],
            set_={
                "status": status,
                "alert": alert,
                "payload": upsert.excluded.payload,
                "created_at": func.now(),
            },
        )
    with translating():
        session.execute(upsert)
        session.flush()
        stored = get_report(session, job, period)
    assert stored is not None  # just written in this transaction
    return stored


def get_report(session: Session, job: str, period: str) -> dict[str, Any] | None:
    with translating():
        row = session.scalars(
            select(MaintenanceReport).where(
                MaintenanceReport.job == job, MaintenanceReport.period == period
            )
        ).first()
        if row is not None:
            session.refresh(row)  # an upsert in this transaction may have changed it
        return _report(row) if row is not None else None


def list_reports(
    session: Session, job: str | None = None, *, limit: int = 50
) -> list[dict[str, Any]]:
    """Reports, newest first (by period within a job, by creation across jobs)."""
    limit = max(1, min(int(limit), MAX_LIST))
    stmt = select(MaintenanceReport)
    if job is not None:
        stmt = stmt.where(MaintenanceReport.job == job).order_by(MaintenanceReport.period.desc())
    else:
        stmt = stmt.order_by(MaintenanceReport.created_at.desc(), MaintenanceReport.id.desc())
    with translating():
        return [_report(row) for row in session.scalars(stmt.limit(limit))]


def latest_reports(session: Session) -> dict[str, dict[str, Any]]:
    """The newest report of each job that has one, by job."""
    latest: dict[str, dict[str, Any]] = {}
    for job in JOBS:
        found = list_reports(session, job, limit=1)
        if found:
            latest[job] = found[0]
    return latest
