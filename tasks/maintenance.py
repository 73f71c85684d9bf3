"""The maintenance cadence (queue maintenance), each job at most once per period.

Each job's TaskSpec (workers/routing.py) carries its schedule, its cadence and its job name;
beat sends it on that schedule. Every run goes through the period guard (workers/periods.py):
a second run for the same job and period, from a second beat or a redelivery, returns
``ran: false`` and changes nothing. The body (tasks/jobs/) returns a Report, stored as the
(job, period) row of ``maintenance_reports``, where the API reads it; the guard's record
keeps the report's status and id.

A report stored with an ``alert`` (an alert or no_data report, a failed backup) is also
raised as an alert (workers/alerts.py): a webhook delivery is enqueued when ALERT_WEBHOOK_URL
is set. Raising it never fails the job: the report is stored first, and an alert that cannot
be enqueued is dead-lettered and logged. Its id is ``report:<job>:<period>``, so a job that
runs again for a period (a retry after the report was stored) raises the same id.

A task takes an optional period id to backfill a missed period; without one it runs for the
current period (UTC now), which is what beat sends.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, Final, cast

from celery import Task, shared_task

from cache.errors import CacheUnavailable
from db.errors import DatabaseUnavailable
from tasks.jobs import audit, backup, capacity, daily, ttl_review
from tasks.jobs.base import FAILED, JobContext, Report
from tasks.runtime import runtime_of
from workers import routing
from workers.alerts import AlertSender, Severity
from workers.client import TaskClient
from workers.periods import check_period, period_of
from workers.runtime import CacheCelery

RETRY_ON: Final = (CacheUnavailable, DatabaseUnavailable)
log = logging.getLogger("tasks.maintenance")

Body = Callable[[JobContext], Report]


def run_job(
    task: Task[Any, Any], spec: routing.TaskSpec, period: str | None, body: Body
) -> dict[str, Any]:
    """Run ``body`` once for (job, period) across every worker and beat; store its report."""
    runtime = runtime_of(task)
    job, cadence = spec.guarded_job, spec.guarded_cadence
    period = (
        period_of(cadence, dt.datetime.now(dt.UTC))
        if period is None
        else check_period(cadence, period)
    )
    context = JobContext(
        runtime.cache, runtime.records, runtime.settings, cadence, period, runtime.services
    )

    def once() -> dict[str, Any]:
        report = body(context)
        stored = runtime.records.save_report(
            job, period, report.status, report.payload, report.alert
        )
        answer = {"report_id": stored["id"], "status": report.status, "alert": report.alert}
        if report.alert:  # the webhook delivery's task id (None: alerts off, or dead-lettered)
            answer["alert_task_id"] = raise_report_alert(task, job, period, report, stored["id"])
        return answer

    token = task.request.id or "direct"
    return runtime.guard.run_once(job, cadence, period, token, once).as_dict()


def raise_report_alert(
    task: Task[Any, Any], job: str, period: str, report: Report, report_id: int
) -> str | None:
    """The alert of a stored report, to the webhook; the delivery's task id. Never raises."""
    try:
        return _raise_report_alert(task, job, period, report, report_id)
    except Exception:  # the report is stored: an alert's trouble must not fail the job
        log.exception("the alert of report %s %s was not raised", job, period)
        return None


def _raise_report_alert(
    task: Task[Any, Any], job: str, period: str, report: Report, report_id: int
) -> str | None:
    runtime = runtime_of(task)
    settings = runtime.settings
    sender = AlertSender(
        TaskClient(settings, app=cast(CacheCelery, task.app)).enqueue_alert,
        runtime.worker.services.redis("durable"),
        runtime.cache.keys,
        runtime.publisher.process,
        bool(settings.alert_webhook_url.get_secret_value()),
    )
    details = {
        "job": job,
        "period": period,
        "status": report.status,
        "report_id": report_id,
        "alerts": list(report.alerts),
    }
    severity: Severity = "critical" if report.status == FAILED else "warning"
    summary = f"{job} {period}: {report.alert}"
    return sender.alert("report", severity, summary, details, id=f"report:{job}:{period}")


@shared_task(bind=True, **routing.task_options(routing.DAILY_REPORT, retry_on=RETRY_ON))
def daily_report(self: Task[Any, Any], period: str | None = None) -> dict[str, Any]:
    """Hit rate and error rate of the previous day, with an alert state below threshold."""
    return run_job(self, routing.DAILY_REPORT, period, daily.run)


@shared_task(bind=True, **routing.task_options(routing.DAILY_BACKUP, retry_on=RETRY_ON))
def daily_backup(self: Task[Any, Any], period: str | None = None) -> dict[str, Any]:
    """BGSAVE, wait for LASTSAVE to move, copy the RDB with retention."""
    return run_job(self, routing.DAILY_BACKUP, period, backup.run)


@shared_task(bind=True, **routing.task_options(routing.WEEKLY_TTL_REVIEW, retry_on=RETRY_ON))
def weekly_ttl_review(self: Task[Any, Any], period: str | None = None) -> dict[str, Any]:
    """TTL recommendations per data type from hit and invalidation rates."""
    return run_job(self, routing.WEEKLY_TTL_REVIEW, period, ttl_review.run)


@shared_task(bind=True, **routing.task_options(routing.MONTHLY_CAPACITY, retry_on=RETRY_ON))
def monthly_capacity(self: Task[Any, Any], period: str | None = None) -> dict[str, Any]:
    """Memory trend and projected days until maxmemory."""
    return run_job(self, routing.MONTHLY_CAPACITY, period, capacity.run)


@shared_task(bind=True, **routing.task_options(routing.QUARTERLY_AUDIT, retry_on=RETRY_ON))
def quarterly_audit(self: Task[Any, Any], period: str | None = None) -> dict[str, Any]:
    """Redis version and security configuration audit."""
    return run_job(self, routing.QUARTERLY_AUDIT, period, audit.run)
