"""The routing table: every task the platform runs, declared once, and what is derived from it.

One :class:`TaskSpec` per task carries its wire name, queue, time limits and, for a scheduled
task, its beat entry (:class:`Beat`) and its cadence (run at most once per period, under the
period guard of workers/periods.py) and whether it stores a maintenance report. The model is
arq's ``WorkerSettings`` and a dramatiq actor's options: a task's policy sits on the task.

Read by every party that must agree, none of which keeps a second list::

    celeryconfig.py          declared queues, task_routes, the visibility timeout (longest
                             hard limit), beat_schedule (workers/beat.py renders each Beat)
    tasks/                   decorator options (task_options), cadence and job name of a run,
                             the limits and argument vocabularies they check
    workers/client.py        sends by name on the task's queue, checks the same vocabularies
    db/reports.py            the report job names (REPORT_JOBS), which the API lists
    api_stub/management      the id limit of a request (MAX_IDS)

Nothing here imports Celery or any other package of the project: producers (the API,
cachectl) and the data layer import it for free. workers/ never imports tasks/; tasks/ import
this table (the dependency runs one way, see workers/__init__.py).

Queues (explicit; ``task_create_missing_queues`` is off, so a typo is an error, not a queue)::

    cache.warmup       bulk reads from the database, pipelined writes; long, few at a time
    cache.invalidate   small and latency-sensitive: a stale read lasts until it runs
    cache.writebehind  write-behind flushes: the stream drained into PostgreSQL in batches
    metrics            the every-minute snapshot, the Redis watch, the consistency monitor
    maintenance        the beat cadence (daily/weekly/monthly/quarterly jobs); also the default;
                       and the webhook deliveries of alerts (few, short, bounded retries)

Schedule (UTC; jobs start a few minutes past the hour, away from other schedulers' top of the
hour; each tick ``expires`` well inside its period, see workers/beat.py)::

    metrics-snapshot     every minute
    writebehind-flush    every DRAIN_SECONDS (no period guard: a steady drain)
    consistency-check    every CONSISTENCY_SECONDS: the monitor's due checks (tasks/consistency.py)
    redis-watch          every WATCH_SECONDS: a new Redis run id or master sends auto_warm
    refresh-ahead        every REFRESH_SECONDS: hot entries re-read before they expire
    daily-report         00:05 every day        hit rate, error rate, alert state
    daily-backup         00:20 every day        BGSAVE, LASTSAVE moved, copy + manifest, retention
    weekly-ttl-review    01:05 Monday           TTL recommendations per data type
    monthly-capacity     01:35 on the 1st       memory trend, days until maxmemory
    quarterly-audit      02:05 on Jan/Apr/Jul/Oct 1st   version and security audit
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

Q_WARMUP: Final = "cache.warmup"
Q_INVALIDATE: Final = "cache.invalidate"
Q_WRITEBEHIND: Final = "cache.writebehind"
Q_METRICS: Final = "metrics"
Q_MAINTENANCE: Final = "maintenance"

QUEUES: Final = (Q_WARMUP, Q_INVALIDATE, Q_WRITEBEHIND, Q_METRICS, Q_MAINTENANCE)
# A message without a route lands here: the quietest queue, so a mistake cannot delay
# invalidations or warm-ups. Every task below has a route, so this catches only strays.
DEFAULT_QUEUE: Final = Q_MAINTENANCE

# --- what both sides of the wire check ----------------------------------------------------
# The client refuses before sending what the task would refuse after receiving.
MEMBER_ACTIONS: Final = ("create", "update", "delete")  # on_member_change(action, member_id)
BULK_KINDS: Final = ("import", "update", "delete")  # on_bulk_operation(kind, affected_count)
# The cache server changed under the platform (tasks.autowarm.identity_change): the warm-up
# then fills what the new server lacks, not what it kept (tasks.autowarm.after_server_change).
SERVER_CHANGE_REASONS: Final = ("redis-restart", "redis-failover", "redis-unknown")
# A warm-up an operator asked for (the others the platform sends itself, beside readers, and
# paces: Settings.cache_autowarm_duty).
MANUAL: Final = "manual"
# Why an automatic warm-up was sent (auto_warm(reason)); its result and the dashboard show it.
AUTO_WARM_REASONS: Final = (
    "worker-start",
    "clear",
    *SERVER_CHANGE_REASONS,
    "cachectl-up",
    "deploy",
    MANUAL,
)
# Member ids in one message or one management request: a message is not a bulk channel
# (warmup_all covers every member); 10,000 ids are about 70 KB of JSON.
MAX_IDS: Final = 10_000
# One write-behind flush run drains for this long, and beat sends one this often: one run
# follows another and the lag stays near the linger time.
DRAIN_SECONDS: Final = 10.0

# How often beat has the Redis identity (run id, master address) compared with the last seen
# one: a restart or failover is followed by a warm-up within this long (plus its run).
WATCH_SECONDS: Final = 10.0
# How often the refresh-ahead job runs; its lead (Settings.cache_refresh_lead_s) is at
# least twice this, so a missed tick still refreshes before the soft expiry.
REFRESH_SECONDS: Final = 30.0

# How often the consistency monitor runs its due checks: a check falls due at ack + window
# and runs within this long after it (the lateness is counted beside the figures).
CONSISTENCY_SECONDS: Final = 1.0

# Retries of tasks that hit a connection error: 1 s, 2 s, 4 s ... capped at RETRY_BACKOFF_MAX,
# each with full jitter so a Redis restart is not followed by a synchronized stampede.
RETRY_BACKOFF_MAX: Final = 60
MAX_RETRIES: Final = 10

# A period of the once-per-period guard (workers/periods.py gives each its id and bounds).
Cadence = Literal["minute", "daily", "weekly", "monthly", "quarterly"]

HOUR: Final = 3600
DAY: Final = 86_400


@dataclass(frozen=True, slots=True)
class Cron:
    """A crontab in Celery's field syntax, as plain data (workers/beat.py makes the crontab)."""

    minute: str = "*"
    hour: str = "*"
    day_of_week: str = "*"
    day_of_month: str = "*"
    month_of_year: str = "*"


@dataclass(frozen=True, slots=True)
class Beat:
    """When beat sends a task: an entry name, a crontab or a fixed interval in seconds, how
    long a tick stays valid (shorter than the period: a tick that waited in the queue is
    dropped rather than run in the next period) and the keyword arguments it sends."""

    entry: str
    every: Cron | float
    expires: float  # seconds
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str  # the wire name: part of the message format, change with care
    queue: str
    soft_time_limit: int  # SoftTimeLimitExceeded is raised in the task: it can clean up
    time_limit: int  # the process running it is killed: the last resort
    beat: Beat | None = None  # sent by beat
    cadence: Cadence | None = None  # run at most once per period (the period guard)
    job: str | None = None  # the guard's job name (and the report's) when it has a cadence
    reports: bool = False  # stores a maintenance report under ``job`` (db/reports.py)

    def __post_init__(self) -> None:
        if self.queue not in QUEUES:
            raise ValueError(f"{self.name}: undeclared queue {self.queue!r}")
        if (self.cadence is None) != (self.job is None):
            raise ValueError(f"{self.name}: a cadence goes with a job name, and only with it")
        if self.reports and self.cadence is None:
            raise ValueError(f"{self.name}: a report is stored per period; give a cadence")

    @property
    def guarded_job(self) -> str:
        """The period guard's job name; ValueError for a task without a cadence."""
        if self.job is None:
            raise ValueError(f"{self.name} has no cadence")
        return self.job

    @property
    def guarded_cadence(self) -> Cadence:
        if self.cadence is None:
            raise ValueError(f"{self.name} has no cadence")
        return self.cadence


def _maintenance(
    job: str, soft: int, hard: int, cadence: Cadence, when: Cron, expires: int
) -> TaskSpec:
    """A maintenance job: once per period, its report stored, sent by beat."""
    entry = job.replace("_", "-")
    return TaskSpec(
        f"tasks.maintenance.{job}",
        Q_MAINTENANCE,
        soft,
        hard,
        beat=Beat(entry, when, expires),
        cadence=cadence,
        job=job,
        reports=True,
    )


WARMUP_CRITICAL: Final = TaskSpec("tasks.warmup.warmup_critical", Q_WARMUP, 300, 330)
WARMUP_ALL: Final = TaskSpec("tasks.warmup.warmup_all", Q_WARMUP, 1800, 1860)
WARMUP_MEMBERS: Final = TaskSpec("tasks.warmup.warmup_members", Q_WARMUP, 300, 330)
WARMUP_DATA_TYPE: Final = TaskSpec("tasks.warmup.warmup_data_type", Q_WARMUP, 600, 630)
# A warm-up of every member split over the worker processes (tasks/chunks.py): a chord of
# chunks (members of one id range, Settings.cache_warmup_chunk_size) and its finish (the
# summed report, the aggregates of warmup_all, the lease released).
WARMUP_CHUNK: Final = TaskSpec("tasks.chunks.warmup_chunk", Q_WARMUP, 300, 330)
WARMUP_FINISH: Final = TaskSpec("tasks.chunks.warmup_finish", Q_WARMUP, 300, 330)

# The automatic warm-up (tasks/autowarm.py): the critical warm-up under a cluster-wide lease,
# sent by the worker_ready signal, the management `clear`, redis-watch, cachectl up, deploy.
AUTO_WARM: Final = TaskSpec("tasks.autowarm.auto_warm", Q_WARMUP, 300, 330)
# Quick (INFO server, one GET/SET); on the metrics queue, which never holds long tasks, so a
# restart is noticed even while the warm-up queue is busy.
WATCH_REDIS: Final = TaskSpec(
    "tasks.autowarm.watch_redis",
    Q_METRICS,
    10,
    20,
    beat=Beat("redis-watch", WATCH_SECONDS, WATCH_SECONDS - 1),
)
# Refresh-ahead of the hot set (tasks/refresh.py): bounded work (hot_size keys), well inside
# its interval.
REFRESH_AHEAD: Final = TaskSpec(
    "tasks.refresh.refresh_ahead",
    Q_WARMUP,
    25,
    int(REFRESH_SECONDS) - 1,
    beat=Beat("refresh-ahead", REFRESH_SECONDS, REFRESH_SECONDS - 1),
)

ON_MEMBER_CHANGE: Final = TaskSpec("tasks.invalidation.on_member_change", Q_INVALIDATE, 20, 30)
ON_BULK_OPERATION: Final = TaskSpec("tasks.invalidation.on_bulk_operation", Q_INVALIDATE, 20, 30)

# One alert POSTed to ALERT_WEBHOOK_URL (tasks/alerts.py): a few seconds at most per attempt;
# its retries are its own (the webhook's answer decides), bounded by a setting.
DELIVER_ALERT: Final = TaskSpec("tasks.alerts.deliver_alert", Q_MAINTENANCE, 20, 30)

METRICS_SNAPSHOT: Final = TaskSpec(
    "tasks.metrics.snapshot",
    Q_METRICS,
    30,
    45,
    beat=Beat("metrics-snapshot", Cron(), 50),
    cadence="minute",
    job="metrics_snapshot",
)

# Drains the write-behind stream for up to DRAIN_SECONDS per run; overlapping runs
# coordinate through the stream's consumer group, so there is no period guard.
FLUSH_WRITEBEHIND: Final = TaskSpec(
    "tasks.writebehind.flush_writebehind",
    Q_WRITEBEHIND,
    30,
    45,
    beat=Beat("writebehind-flush", DRAIN_SECONDS, DRAIN_SECONDS - 1, {"seconds": DRAIN_SECONDS}),
)

# The consistency monitor (tasks/consistency.py): bounded work (CONSISTENCY_MAX_CHECKS per
# run); on the metrics queue, which holds no long task, so checks are not late behind a
# warm-up. A tick that waited longer than the interval is dropped: the next one claims its
# checks.
CHECK_CONSISTENCY: Final = TaskSpec(
    "tasks.consistency.check_consistency",
    Q_METRICS,
    10,
    20,
    beat=Beat("consistency-check", CONSISTENCY_SECONDS, CONSISTENCY_SECONDS),
)

DAILY_REPORT: Final = _maintenance(
    "daily_report", 300, 330, "daily", Cron(minute="5", hour="0"), 12 * HOUR
)
DAILY_BACKUP: Final = _maintenance(
    "daily_backup", 900, 960, "daily", Cron(minute="20", hour="0"), 12 * HOUR
)
WEEKLY_TTL_REVIEW: Final = _maintenance(
    "weekly_ttl_review", 600, 660, "weekly", Cron(minute="5", hour="1", day_of_week="mon"),
    3 * DAY,
)  # fmt: skip
MONTHLY_CAPACITY: Final = _maintenance(
    "monthly_capacity", 600, 660, "monthly", Cron(minute="35", hour="1", day_of_month="1"),
    7 * DAY,
)  # fmt: skip
QUARTERLY_AUDIT: Final = _maintenance(
    "quarterly_audit", 300, 330, "quarterly",
    Cron(minute="5", hour="2", day_of_month="1", month_of_year="1,4,7,10"), 14 * DAY,
)  # fmt: skip

TASKS: Final[tuple[TaskSpec, ...]] = (
    WARMUP_CRITICAL,
    WARMUP_ALL,
    WARMUP_MEMBERS,
    WARMUP_DATA_TYPE,
    WARMUP_CHUNK,
    WARMUP_FINISH,
    AUTO_WARM,
    WATCH_REDIS,
    REFRESH_AHEAD,
    ON_MEMBER_CHANGE,
    ON_BULK_OPERATION,
    DELIVER_ALERT,
    METRICS_SNAPSHOT,
    FLUSH_WRITEBEHIND,
    CHECK_CONSISTENCY,
    DAILY_REPORT,
    DAILY_BACKUP,
    WEEKLY_TTL_REVIEW,
    MONTHLY_CAPACITY,
    QUARTERLY_AUDIT,
)
# Tasks beat sends, in table order.
SCHEDULED: Final = tuple(spec for spec in TASKS if spec.beat is not None)
# The job names of maintenance_reports rows (db/reports.py, the API's /reports filter).
REPORT_JOBS: Final = tuple(spec.guarded_job for spec in TASKS if spec.reports)


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
