"""The beat schedule, rendered from the routing table (workers/routing.py): nothing is declared
here. Each scheduled TaskSpec carries its Beat (entry, crontab or interval, expiry, kwargs);
this module turns them into Celery's ``beat_schedule`` (celeryconfig.py).

All times are UTC (celeryconfig sets ``timezone="UTC"``). A task with a cadence is idempotent
per period (workers/periods.py): a tick duplicated by a second beat, a restart or a
redelivery does nothing. Each entry ``expires`` well inside its period, so a tick that waited
in the queue (workers down) is dropped rather than run in the next period, where it would
take the next period's slot: the period a task computes at run time is then always the period
of its tick. (https://docs.celeryq.dev/en/stable/userguide/periodic-tasks.html)
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from workers import routing


def crontab_of(cron: routing.Cron) -> crontab:
    return crontab(
        minute=cron.minute,
        hour=cron.hour,
        day_of_week=cron.day_of_week,
        day_of_month=cron.day_of_month,
        month_of_year=cron.month_of_year,
    )


def entry(spec: routing.TaskSpec, every: float | None = None) -> dict[str, Any]:
    """The ``beat_schedule`` entry of a scheduled task: sent by name, on its own queue.

    ``every`` replaces a crontab by a fixed interval in seconds (tests that watch beats tick
    within seconds); a task with a cadence still runs once per period, which is what such a
    test checks. A task already on an interval keeps it.
    """
    beat = spec.beat
    if beat is None:
        raise ValueError(f"{spec.name} is not scheduled")
    schedule: crontab | float
    expires = beat.expires
    if isinstance(beat.every, routing.Cron):
        schedule = crontab_of(beat.every) if every is None else every
        if every is not None:
            expires = min(expires, every * 10)
    else:
        schedule = beat.every
    found: dict[str, Any] = {
        "task": spec.name,
        "schedule": schedule,
        "options": {"queue": spec.queue, "expires": expires},
    }
    if beat.kwargs:
        found["kwargs"] = dict(beat.kwargs)
    return found


def schedule(every: float | None = None) -> dict[str, dict[str, Any]]:
    """``beat_schedule``: one entry per scheduled task of the routing table."""
    return {spec.beat.entry: entry(spec, every) for spec in routing.SCHEDULED if spec.beat}
