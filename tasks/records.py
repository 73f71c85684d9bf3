"""Where the jobs keep what they find: the :class:`Records` protocol and its database version.

Metrics snapshots and maintenance reports go to PostgreSQL (db/reports.py); each call is one
short transaction. Like tasks/sources.py for reads, this is the only module of the jobs that
touches the data layer, so a test can hand a job an in-memory Records instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from db import make_engine, reports, resolve_database_url, session_factory

T = TypeVar("T")
# Folds (baseline snapshot or None, snapshots in the window oldest first) into a result.
Fold = Callable[[dict[str, Any] | None, Iterator[dict[str, Any]]], T]


class Records(Protocol):
    def add_snapshot(self, taken_at: dt.datetime, payload: dict[str, Any]) -> int: ...

    def prune_snapshots(self, before: dt.datetime) -> int: ...

    def fold_snapshots(self, start: dt.datetime, end: dt.datetime, fold: Fold[T]) -> T:
        """``fold(baseline, snapshots)`` over [start, end), streamed inside one read."""
        ...

    def memory_series(
        self, start: dt.datetime, end: dt.datetime
    ) -> list[tuple[dt.datetime, int, int]]: ...

    def latest_snapshot(self) -> dict[str, Any] | None: ...

    def save_report(
        self, job: str, period: str, status: str, payload: dict[str, Any], alert: str | None
    ) -> dict[str, Any]: ...

    def close(self) -> None: ...


class SqlRecords:
    """:class:`Records` over db/reports.py: one engine per worker process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions: sessionmaker[Session] = session_factory(engine)

    @classmethod
    def from_settings(cls, settings: Settings) -> SqlRecords:
        return cls(make_engine(resolve_database_url(settings)))

    def add_snapshot(self, taken_at: dt.datetime, payload: dict[str, Any]) -> int:
        with self._sessions.begin() as session:
            return reports.add_snapshot(session, taken_at, payload)

    def prune_snapshots(self, before: dt.datetime) -> int:
        with self._sessions.begin() as session:
            return reports.prune_snapshots(session, before)

    def fold_snapshots(self, start: dt.datetime, end: dt.datetime, fold: Fold[T]) -> T:
        with self._sessions() as session:
            baseline = reports.snapshot_before(session, start)
            return fold(baseline, reports.iter_snapshots(session, start, end))

    def memory_series(
        self, start: dt.datetime, end: dt.datetime
    ) -> list[tuple[dt.datetime, int, int]]:
        with self._sessions() as session:
            return reports.memory_series(session, start, end)

    def latest_snapshot(self) -> dict[str, Any] | None:
        with self._sessions() as session:
            return reports.latest_snapshot(session)

    def save_report(
        self, job: str, period: str, status: str, payload: dict[str, Any], alert: str | None
    ) -> dict[str, Any]:
        with self._sessions.begin() as session:
            return reports.save_report(session, job, period, status, payload, alert)

    def close(self) -> None:
        self.engine.dispose()
