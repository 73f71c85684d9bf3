"""The beat schedule: the every-minute metrics snapshot and the maintenance cadence.

All times are UTC (celeryconfig sets ``timezone="UTC"``). Jobs start a few minutes past the
hour so they do not coincide with the top-of-the-hour traffic of other schedulers.

Each job is idempotent per period (workers/periods.py): a tick duplicated by a second beat, a
restart or a redelivery does nothing. Each entry also ``expires`` well inside its period, so a
tick that waited in the queue (workers down) is dropped rather than run in the next period,
where it would take the next period's slot: the period a task computes at run time is then
always the period of its tick.

Entries (https://docs.celeryq.dev/en/stable/userguide/periodic-tasks.html#crontab-schedules)::

    metrics-snapshot         every minute
    daily-report             00:05 every day        hit rate, error rate, alert state
    daily-backup             00:20 every day        BGSAVE, LASTSAVE moved, copy, retention
    weekly-ttl-review        01:05 Monday           TTL recommendations per data type
    monthly-capacity         01:35 on the 1st       memory trend, days until maxmemory
    quarterly-audit          02:05 on Jan/Apr/Jul/Oct 1st   version and security audit
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from celery.schedules import crontab

from workers import routing
from workers.periods import Cadence

HOUR: Final = 3600
DAY: Final = 86_400


@dataclass(frozen=True, slots=True)
class Job:
    """One scheduled task: its name, cadence, when it fires and how long a tick stays valid."""

    entry: str
    spec: routing.TaskSpec
    cadence: Cadence
    schedule: crontab
    expires: int  # seconds; shorter than the period (see the module docstring)


WRITEBEHIND_FLUSH_EVERY: Final = 10.0  # seconds: bounds write-behind lag when no flush is running

JOBS: Final[tuple[Job, ...]] = (
    Job("metrics-snapshot", routing.METRICS_SNAPSHOT, "minute", crontab(), 50),
    Job("daily-report", routing.DAILY_REPORT, "daily", crontab(minute=5, hour=0), 12 * HOUR),
    Job("daily-backup", routing.DAILY_BACKUP, "daily", crontab(minute=20, hour=0), 12 * HOUR),
    Job(
        "weekly-ttl-review",
        routing.WEEKLY_TTL_REVIEW,
        "weekly",
        crontab(minute=5, hour=1, day_of_week="mon"),
        3 * DAY,
    ),
    Job(
        "monthly-capacity",
        routing.MONTHLY_CAPACITY,
        "monthly",
        crontab(minute=35, hour=1, day_of_month=1),
        7 * DAY,
    ),
    Job(
        "quarterly-audit",
        routing.QUARTERLY_AUDIT,
        "quarterly",
        crontab(minute=5, hour=2, day_of_month=1, month_of_year="1,4,7,10"),
        14 * DAY,
    ),
)

CADENCE_OF: Final[dict[str, Cadence]] = {job.spec.name: job.cadence for job in JOBS}


def schedule(every: float | None = None) -> dict[str, dict[str, Any]]:
    """``beat_schedule``: entries send by task name, on the task's own queue.

    ``every`` replaces each crontab by a fixed interval in seconds, for tests that watch
    beats tick within seconds; the jobs still run once per period (their guard), which is
    what such a test checks.

    The write-behind flush is no periodic job but a steady drain: every 10 s, no period guard
    (overlapping runs share the stream's consumer group; the flush itself is exactly-once).
    """
    entries = {
        job.entry: {
            "task": job.spec.name,
            "schedule": job.schedule if every is None else every,
            "options": {
                "queue": job.spec.queue,
                "expires": job.expires if every is None else min(job.expires, every * 10),
            },
        }
        for job in JOBS
    }
    entries["writebehind-flush"] = {
        "task": routing.FLUSH_WRITEBEHIND.name,
        "schedule": WRITEBEHIND_FLUSH_EVERY,
        "kwargs": {"seconds": WRITEBEHIND_FLUSH_EVERY},
        "options": {
            "queue": routing.FLUSH_WRITEBEHIND.queue,
            "expires": WRITEBEHIND_FLUSH_EVERY - 1,
        },
    }
    return entries
