"""The maintenance cadence (queue maintenance), each job at most once per period.

Beat sends these on the schedule of workers/beat.py. Every run goes through the period guard
(workers/periods.py): a second run for the same job and period, from a second beat or a
redelivery, returns ``ran: false`` and changes nothing.

The bodies are placeholders for now: each records its run (in the guard's record) and
returns what it would report. The real ones (issue 4) read metrics snapshots and Redis and
store a report row in PostgreSQL; they must keep the same shape: one body, no side effect
outside the guard's protection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from celery import Task, shared_task

from cache.errors import CacheUnavailable
from workers import routing
from workers.beat import CADENCE_OF
from workers.runtime import Runtime, runtime_of

RETRY_ON: Final = (CacheUnavailable,)

Body = Callable[[Runtime], dict[str, Any]]


def run_job(
    task: Task[Any, Any], spec: routing.TaskSpec, period: str | None, body: Body
) -> dict[str, Any]:
    """Run ``body`` once for (job, period) across every worker and beat."""
    runtime = runtime_of(task)
    job = spec.name.rsplit(".", 1)[-1]
    token = task.request.id or "direct"
    outcome = runtime.guard.run_once(
        job, CADENCE_OF[spec.name], period, token, lambda: body(runtime)
    )
    return outcome.as_dict()


def _placeholder(what: str) -> Body:
    def body(runtime: Runtime) -> dict[str, Any]:
        return {"job": what, "implemented": False}

    return body


@shared_task(bind=True, **routing.task_options(routing.DAILY_REPORT, retry_on=RETRY_ON))
def daily_report(self: Task[Any, Any], period: str | None = None) -> dict[str, Any]:
    """Hit rate and error rate of the day, with an alert state below threshold."""
    return run_job(self, routing.DAILY_REPORT, period, _placeholder("daily hit/error report"))


@shared_task(bind=True, **routing.task_options(routing.DAILY_BACKUP, retry_on=RETRY_ON))
def daily_backup(self: Task[Any, Any], period: str | None = None) -> dict[str, Any]:
    """BGSAVE, wait for LASTSAVE to move, copy the RDB with retention."""
    return run_job(self, routing.DAILY_BACKUP, period, _placeholder("daily RDB backup"))


@shared_task(bind=True, **routing.task_options(routing.WEEKLY_TTL_REVIEW, retry_on=RETRY_ON))
def weekly_ttl_review(self: Task[Any, Any], period: str | None = None) -> dict[str, Any]:
    """TTL recommendations per data type from hit and invalidation rates."""
    return run_job(self, routing.WEEKLY_TTL_REVIEW, period, _placeholder("weekly TTL review"))


@shared_task(bind=True, **routing.task_options(routing.MONTHLY_CAPACITY, retry_on=RETRY_ON))
def monthly_capacity(self: Task[Any, Any], period: str | None = None) -> dict[str, Any]:
    """Memory trend and projected days until maxmemory."""
    return run_job(self, routing.MONTHLY_CAPACITY, period, _placeholder("monthly capacity"))


@shared_task(bind=True, **routing.task_options(routing.QUARTERLY_AUDIT, retry_on=RETRY_ON))
def quarterly_audit(self: Task[Any, Any], period: str | None = None) -> dict[str, Any]:
    """Redis version and security configuration audit."""
    return run_job(self, routing.QUARTERLY_AUDIT, period, _placeholder("quarterly audit"))
