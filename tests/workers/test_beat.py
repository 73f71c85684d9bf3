"""The beat schedule: every entry routed, on its queue, firing on its cadence, expiring in time."""

from __future__ import annotations

import datetime as dt

import pytest
from celery.schedules import crontab

from workers import routing
from workers.beat import JOBS, Job, schedule
from workers.periods import period_of


def test_schedule_entries() -> None:
    entries = schedule()
    flush = entries.pop("writebehind-flush")
    assert flush["task"] == routing.FLUSH_WRITEBEHIND.name
    assert flush["options"]["queue"] == "cache.writebehind"
    assert flush["schedule"] == flush["kwargs"]["seconds"] == 10.0
    assert set(entries) == {job.entry for job in JOBS}
    assert {entry["task"] for entry in entries.values()} == {
        routing.METRICS_SNAPSHOT.name,
        routing.DAILY_REPORT.name,
        routing.DAILY_BACKUP.name,
        routing.WEEKLY_TTL_REVIEW.name,
        routing.MONTHLY_CAPACITY.name,
        routing.QUARTERLY_AUDIT.name,
    }
    for entry in entries.values():
        spec = routing.BY_NAME[entry["task"]]
        assert entry["options"]["queue"] == spec.queue
        assert isinstance(entry["schedule"], crontab)


def fire_times(sched: crontab, start: dt.datetime, days: int) -> list[dt.datetime]:
    """Every minute in [start, start + days) at which the crontab fires."""
    times = []
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        weekday = day.isoweekday() % 7  # crontab counts Sunday as 0
        if (
            day.day in sched.day_of_month
            and day.month in sched.month_of_year
            and weekday in sched.day_of_week
        ):
            times += [
                day.replace(hour=h, minute=m)
                for h in sorted(sched.hour)
                for m in sorted(sched.minute)
            ]
    return times


@pytest.mark.parametrize("job", JOBS, ids=lambda job: job.entry)
def test_one_tick_per_period_and_it_expires_inside_it(job: Job) -> None:
    """Over a year, each period gets exactly one tick, and a tick still waiting in the queue
    expires before its period ends: a delayed tick never runs in (and uses up) the next."""
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    times = fire_times(job.schedule, start, 2 if job.cadence == "minute" else 366)
    periods = [period_of(job.cadence, when) for when in times]
    assert periods, "never fires"
    assert len(periods) == len(set(periods))
    if job.cadence != "minute":  # every period of the year is covered (ISO week 1 of 2025
        # began in 2024, so the first week is left out)
        expected = {period_of(job.cadence, start + dt.timedelta(days=d)) for d in range(7, 365)}
        assert set(periods) >= expected
    for when in times:
        last_moment = when + dt.timedelta(seconds=job.expires)
        assert period_of(job.cadence, last_moment) == period_of(job.cadence, when)
