"""Run a scheduled job at most once per period, however many times it is sent.

Two beats, a beat restarted mid-tick, or a redelivered message can all send the same job
twice for the same day. Each run first claims ``<prefix>sys:period:<job>:<period>`` with
``SET NX``; only the claimant runs the body. The claim is a lease (it expires if the worker dies
mid-run, so a redelivery can finish the job); on success it becomes the period's record (kept
two periods long), on failure it is released so a retry can run.

Period ids are UTC and sort as text: ``2025-11-25T1031`` (minute; a key part holds no colon),
``2025-11-25`` (daily), ``2025-W48`` (ISO week), ``2025-11`` (monthly), ``2025-Q4`` (quarterly).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from redis.exceptions import RedisError

from cache import Keys
from cache.client import SyncRedis
from cache.errors import CacheUnavailable
from workers.routing import Cadence

log = logging.getLogger("workers.periods")

# How long the record of a done period is kept: two periods, so "already done" is still
# known when the next period's first tick arrives, and records do not pile up.
RECORD_SECONDS: Final[dict[Cadence, int]] = {
    "minute": 2 * 60,
    "daily": 2 * 86_400,
    "weekly": 2 * 7 * 86_400,
    "monthly": 2 * 31 * 86_400,
    "quarterly": 2 * 92 * 86_400,
}

# Compare-and-set and compare-and-delete on the claim: only the claimant may turn its lease
# into a record or release it, never a late worker whose lease has been taken over.
_COMPLETE = """
local current = redis.call('GET', KEYS[1])
if not current or cjson.decode(current)['token'] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""
_RELEASE = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['token'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def period_of(cadence: Cadence, when: dt.datetime) -> str:
    """The id of the period holding ``when`` (converted to UTC; naive means UTC)."""
    utc = when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)
    if cadence == "minute":
        return utc.strftime("%Y-%m-%dT%H%M")
    if cadence == "daily":
        return utc.strftime("%Y-%m-%d")
    if cadence == "weekly":
        year, week, _ = utc.isocalendar()
        return f"{year}-W{week:02d}"
    if cadence == "monthly":
        return utc.strftime("%Y-%m")
    if cadence == "quarterly":
        return f"{utc.year}-Q{(utc.month - 1) // 3 + 1}"
    raise ValueError(f"unknown cadence {cadence!r}")


_STRPTIME: Final[dict[Cadence, str]] = {
    "minute": "%Y-%m-%dT%H%M",
    "daily": "%Y-%m-%d",
    "monthly": "%Y-%m",
}
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_QUARTER = re.compile(r"^\d{4}-Q[1-4]$")


def check_period(cadence: Cadence, period: str) -> str:
    """``period`` if it is a well-formed id for the cadence (as period_of writes it), else
    ValueError."""
    try:
        if cadence in _STRPTIME:
            fmt = _STRPTIME[cadence]
            valid = dt.datetime.strptime(period, fmt).strftime(fmt) == period
        elif cadence == "weekly":
            match = _WEEK.match(period)
            if match:
                dt.date.fromisocalendar(int(match[1]), int(match[2]), 1)  # week 54 raises
            valid = match is not None
        else:
            valid = bool(_QUARTER.match(period))
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"{period!r} is not a {cadence} period id")
    return period


def bounds(cadence: Cadence, period: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a period, in UTC."""
    check_period(cadence, period)
    if cadence in _STRPTIME:
        start = dt.datetime.strptime(period, _STRPTIME[cadence]).replace(tzinfo=dt.UTC)
    elif cadence == "weekly":
        year, week = period.split("-W")
        day = dt.date.fromisocalendar(int(year), int(week), 1)
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    else:
        year, quarter = period.split("-Q")
        start = dt.datetime(int(year), 3 * int(quarter) - 2, 1, tzinfo=dt.UTC)
    if cadence == "minute":
        return start, start + dt.timedelta(minutes=1)
    if cadence == "daily":
        return start, start + dt.timedelta(days=1)
    if cadence == "weekly":
        return start, start + dt.timedelta(weeks=1)
    months = 1 if cadence == "monthly" else 3
    month = start.month - 1 + months
    return start, start.replace(year=start.year + month // 12, month=month % 12 + 1)


def previous(cadence: Cadence, period: str) -> str:
    """The period just before ``period``: what a report run in ``period`` looks back on."""
    start, _ = bounds(cadence, period)
    return period_of(cadence, start - dt.timedelta(seconds=1))


@dataclass(frozen=True, slots=True)
class Outcome:
    ran: bool
    job: str
    period: str
    result: Any = None  # the body's return value when it ran
    record: dict[str, Any] | None = None  # the existing claim or record when it did not

    def as_dict(self) -> dict[str, Any]:
        return {
            "ran": self.ran,
            "job": self.job,
            "period": self.period,
            "result": self.result,
            "record": self.record,
        }


class PeriodGuard:
    """SET NX claims on the cache's Redis (the writer: a master, never a replica)."""

    def __init__(self, client: SyncRedis, keys: Keys, lease_seconds: int = 900) -> None:
        self.client = client
        self.keys = keys
        self.lease_seconds = lease_seconds  # at least the longest job's hard time limit
        self._complete = client.register_script(_COMPLETE)
        self._release = client.register_script(_RELEASE)

    def key(self, job: str, period: str) -> str:
        return self.keys.system("period", job, period)

    def run_once(
        self,
        job: str,
        cadence: Cadence,
        period: str | None,
        token: str,
        body: Callable[[], Any],
    ) -> Outcome:
        """Run ``body`` unless this job already ran (or is running) for ``period``.

        ``period`` None means the current one (UTC now); an explicit one backfills a missed
        period (a period already done stays done).
        The body's result must be JSON-serializable: it is stored as the period's record.

        Raises CacheUnavailable when Redis cannot be asked: without the guard a run could be a
        duplicate, so the caller retries rather than running blind.
        """
        period = (
            period_of(cadence, dt.datetime.now(dt.UTC))
            if period is None
            else check_period(cadence, period)
        )
        key = self.key(job, period)
        claim = {"state": "running", "token": token, "started_at": time.time()}
        try:
            taken = self.client.set(key, json.dumps(claim), nx=True, ex=self.lease_seconds)
            if not taken:
                raw = self.client.get(key)
                return Outcome(False, job, period, record=json.loads(raw) if raw else None)
        except RedisError as exc:
            raise CacheUnavailable(f"period guard for {job} {period}: {exc}") from exc
        try:
            result = body()
        except BaseException:
            self._call(self._release, key, token)
            raise
        record = claim | {"state": "done", "finished_at": time.time(), "result": result}
        self._call(self._complete, key, token, json.dumps(record), RECORD_SECONDS[cadence])
        return Outcome(True, job, period, result=result)

    def _call(self, script: Any, key: str, *args: object) -> None:
        try:
            script(keys=[key], args=list(args))
        except RedisError as exc:
            # Not raised: the body's outcome matters more. The lease then simply expires; the
            # worst case is one more run after it, which the jobs tolerate (idempotent).
            log.warning("period guard %s not updated: %s", key, exc)
