"""The beat schedule: rendered from the routing table, every entry on its task's queue, firing
once per period of its cadence and expiring inside it."""

from __future__ import annotations

import datetime as dt

import pytest
from celery.schedules import crontab

import celeryconfig
from config import load_settings
from workers import routing
from workers.beat import crontab_of, schedule
from workers.periods import period_of

GUARDED = [spec for spec in routing.SCHEDULED if spec.cadence is not None]


def test_the_schedule_is_the_tables() -> None:
    """celeryconfig's beat_schedule has one entry per scheduled TaskSpec, named, timed and
    routed as the spec says, and nothing else."""
    entries = celeryconfig.from_settings(load_settings(_env_file=None))["beat_schedule"]
    assert entries == schedule()
    assert list(entries) == [spec.beat.entry for spec in routing.SCHEDULED if spec.beat]
    for spec in routing.SCHEDULED:
        assert spec.beat is not None
        entry = entries[spec.beat.entry]
        assert entry["task"] == spec.name
        assert entry["options"] == {"queue": spec.queue, "expires": spec.beat.expires}
        assert entry.get("kwargs", {}) == dict(spec.beat.kwargs)
        if isinstance(spec.beat.every, routing.Cron):
            assert entry["schedule"] == crontab_of(spec.beat.every)
        else:
            assert entry["schedule"] == spec.beat.every
    # The metrics snapshot, the write-behind drain, the five maintenance jobs, the Redis
    # identity watch, the refresh-ahead of the hot set and the consistency monitor.
    assert {spec.queue for spec in routing.SCHEDULED} == {
        routing.Q_METRICS,
        routing.Q_WRITEBEHIND,
        routing.Q_MAINTENANCE,
        routing.Q_WARMUP,
    }
    assert len(routing.SCHEDULED) == 10


def test_the_write_behind_drain_runs_as_long_as_its_interval() -> None:
    flush = schedule()[routing.FLUSH_WRITEBEHIND.beat.entry]  # type: ignore[union-attr]
    assert flush["schedule"] == flush["kwargs"]["seconds"] == routing.DRAIN_SECONDS
    assert flush["options"]["expires"] < routing.DRAIN_SECONDS
    # A fast test schedule keeps the drain's own interval.
    assert schedule(every=1.0)[routing.FLUSH_WRITEBEHIND.beat.entry] == flush  # type: ignore[union-attr]


def test_a_test_interval_replaces_every_crontab() -> None:
    fast = schedule(every=2.0)
    for spec in GUARDED:
        assert spec.beat is not None
        assert fast[spec.beat.entry]["schedule"] == 2.0
        assert fast[spec.beat.entry]["options"]["expires"] <= 20.0


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


@pytest.mark.parametrize("spec", GUARDED, ids=lambda spec: spec.guarded_job)
def test_one_tick_per_period_and_it_expires_inside_it(spec: routing.TaskSpec) -> None:
    """Over a year, each period gets exactly one tick, and a tick still waiting in the queue
    expires before its period ends: a delayed tick never runs in (and uses up) the next."""
    assert spec.beat is not None and isinstance(spec.beat.every, routing.Cron)
    cadence = spec.guarded_cadence
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    times = fire_times(crontab_of(spec.beat.every), start, 2 if cadence == "minute" else 366)
    periods = [period_of(cadence, when) for when in times]
    assert periods, "never fires"
    assert len(periods) == len(set(periods))
    if cadence != "minute":  # every period of the year is covered (ISO week 1 of 2025
        # began in 2024, so the first week is left out)
        expected = {period_of(cadence, start + dt.timedelta(days=d)) for d in range(7, 365)}
        assert set(periods) >= expected
    for when in times:
        last_moment = when + dt.timedelta(seconds=spec.beat.expires)
        assert period_of(cadence, last_moment) == period_of(cadence, when)
