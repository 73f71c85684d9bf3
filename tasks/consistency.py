"""The consistency monitor's task (queue metrics): beat sends one run a second; the checks
and the counting are tasks/monitor.py's, the samples cache/consistency.py's."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from redis.exceptions import RedisError

from db.errors import DatabaseUnavailable
from tasks.runtime import runtime_of
from workers import routing

log = logging.getLogger("tasks.consistency")


@shared_task(
    bind=True,
    **routing.task_options(routing.CHECK_CONSISTENCY, retry_on=()),
)
def check_consistency(self: Task[Any, Any]) -> dict[str, Any]:
    """One run of the monitor (beat sends one a second; a tick that waited is dropped)."""
    runtime = runtime_of(self)
    try:
        return runtime.monitor.run()
    except (RedisError, DatabaseUnavailable) as exc:
        # A dead dependency: the claimed checks are lost (not miscounted); the next run goes on.
        log.warning("consistency run skipped: %s", exc)
        return {"checks": 0, "skipped": str(exc)}
