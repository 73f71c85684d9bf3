"""What every maintenance job receives and returns."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Final

from cache import CacheService
from config import Settings
from services import Services
from tasks.counters import Window
from tasks.records import Records
from workers.periods import bounds, previous
from workers.routing import Cadence

OK: Final = "ok"
ALERT: Final = "alert"
NO_DATA: Final = "no_data"
FAILED: Final = "failed"


@dataclass(frozen=True, slots=True)
class JobContext:
    cache: CacheService
    records: Records
    settings: Settings
    cadence: Cadence
    period: str  # the period the job runs in (workers/periods.py id)
    services: Services  # the process's: a job that needs another Redis role asks it here

    @property
    def window(self) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) of the previous period: a report run on the 26th covers the 25th."""
        return bounds(self.cadence, previous(self.cadence, self.period))

    def fold_window(self) -> Window:
        start, end = self.window
        return self.records.fold_snapshots(start, end, lambda base, rows: Window().fold(base, rows))


@dataclass(frozen=True, slots=True)
class Report:
    status: str
    payload: dict[str, Any]
    alerts: list[str] = field(default_factory=list)

    @property
    def alert(self) -> str | None:
        return "; ".join(self.alerts) or None


def judged(payload: dict[str, Any], alerts: list[str], *, has_data: bool = True) -> Report:
    """ok, alert (any alert) or no_data."""
    if not has_data:
        return Report(NO_DATA, payload, alerts or ["no metrics snapshots in the window"])
    return Report(ALERT if alerts else OK, payload, alerts)


def window_dict(start: dt.datetime, end: dt.datetime) -> dict[str, str]:
    return {"start": start.isoformat(), "end": end.isoformat()}
