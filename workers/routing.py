"""Queues and task names: every task the platform runs, its queue and its time limits.

One table, read by three parties that must agree: celeryconfig.py (declared queues, routes,
the visibility timeout derived from the longest hard limit), the task decorators in tasks/
(names and limits), and workers/client.py (which enqueues by name and never imports tasks/).
Nothing here imports Celery.

Queues (explicit; ``task_create_missing_queues`` is off, so a typo is an error, not a queue)::

    cache.warmup       bulk reads from the database, pipelined writes; long, few at a time
    cache.invalidate   small and latency-sensitive: a stale read lasts until it runs
    cache.writebehind  write-behind flushes: the stream drained into PostgreSQL in batches
    metrics            the every-minute snapshot
    maintenance        the beat cadence (daily/weekly/monthly/quarterly jobs); also the default
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

Q_WARMUP: Final = "cache.warmup"
Q_INVALIDATE: Final = "cache.invalidate"
Q_WRITEBEHIND: Final = "cache.writebehind"
Q_METRICS: Final = "metrics"
Q_MAINTENANCE: Final = "maintenance"

QUEUES: Final = (Q_WARMUP, Q_INVALIDATE, Q_WRITEBEHIND, Q_METRICS, Q_MAINTENANCE)
# A message without a route lands here: the quietest queue, so a mistake cannot delay
# invalidations or warm-ups. Every task below has a route, so this catches only strays.
DEFAULT_QUEUE: Final = Q_MAINTENANCE


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    queue: str
    soft_time_limit: int  # SoftTimeLimitExceeded is raised in the task: it can clean up
    time_limit: int  # the process running it is killed: the last resort


# Task names are part of the wire format (the client sends them by name): change with care.
WARMUP_CRITICAL: Final = TaskSpec("tasks.warmup.warmup_critical", Q_WARMUP, 300, 330)
WARMUP_ALL: Final = TaskSpec("tasks.warmup.warmup_all", Q_WARMUP, 1800, 1860)
WARMUP_MEMBERS: Final = TaskSpec("tasks.warmup.warmup_members", Q_WARMUP, 300, 330)
WARMUP_DATA_TYPE: Final = TaskSpec("tasks.warmup.warmup_data_type", Q_WARMUP, 600, 630)

ON_MEMBER_CHANGE: Final = TaskSpec("tasks.invalidation.on_member_change", Q_INVALIDATE, 20, 30)
ON_BULK_OPERATION: Final = TaskSpec("tasks.invalidation.on_bulk_operation", Q_INVALIDATE, 20, 30)

METRICS_SNAPSHOT: Final = TaskSpec("tasks.metrics.snapshot", Q_METRICS, 30, 45)

# Drains the write-behind stream for up to ~25 s per run; beat starts one every 10 s and
# overlapping runs coordinate through the stream's consumer group.
FLUSH_WRITEBEHIND: Final = TaskSpec("tasks.writebehind.flush_writebehind", Q_WRITEBEHIND, 30, 45)

DAILY_REPORT: Final = TaskSpec("tasks.maintenance.daily_report", Q_MAINTENANCE, 300, 330)
DAILY_BACKUP: Final = TaskSpec("tasks.maintenance.daily_backup", Q_MAINTENANCE, 900, 960)
WEEKLY_TTL_REVIEW: Final = TaskSpec("tasks.maintenance.weekly_ttl_review", Q_MAINTENANCE, 600, 660)
MONTHLY_CAPACITY: Final = TaskSpec("tasks.maintenance.monthly_capacity", Q_MAINTENANCE, 600, 660)
QUARTERLY_AUDIT: Final = TaskSpec("tasks.maintenance.quarterly_audit", Q_MAINTENANCE, 300, 330)

TASKS: Final[tuple[TaskSpec, ...]] = (
    WARMUP_CRITICAL,
    WARMUP_ALL,
    WARMUP_MEMBERS,
    WARMUP_DATA_TYPE,
    ON_MEMBER_CHANGE,
    ON_BULK_OPERATION,
    METRICS_SNAPSHOT,
    FLUSH_WRITEBEHIND,
    DAILY_REPORT,
    DAILY_BACKUP,
    WEEKLY_TTL_REVIEW,
    MONTHLY_CAPACITY,
    QUARTERLY_AUDIT,
)
BY_NAME: Final = {spec.name: spec for spec in TASKS}

# Retries of tasks that hit a connection error: 1 s, 2 s, 4 s ... capped at RETRY_BACKOFF_MAX,
# each with full jitter so a Redis restart is not followed by a synchronized stampede.
RETRY_BACKOFF_MAX: Final = 60
MAX_RETRIES: Final = 10


def routes() -> dict[str, dict[str, str]]:
    """``task_routes``: exact task name -> queue."""
    return {spec.name: {"queue": spec.queue} for spec in TASKS}


def longest_hard_limit() -> int:
    return max(spec.time_limit for spec in TASKS)


def task_options(
    spec: TaskSpec, *, retry_on: tuple[type[BaseException], ...] = ()
) -> dict[str, Any]:
    """Decorator options of a task: its name and limits, and retries with backoff and jitter
    on the given (connection) errors. Other errors fail the task at once."""
    options: dict[str, Any] = {
        "name": spec.name,
        "soft_time_limit": spec.soft_time_limit,
        "time_limit": spec.time_limit,
    }
    if retry_on:
        options |= {
            "autoretry_for": retry_on,
            "retry_backoff": True,
            "retry_backoff_max": RETRY_BACKOFF_MAX,
            "retry_jitter": True,
            "max_retries": MAX_RETRIES,
        }
    return options
