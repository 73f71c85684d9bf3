"""Enqueue cache work by task name, and read its progress, without importing any task code.

For the API, cachectl and scripts. Build one client per process from its Settings and reuse
it (it holds a pooled broker connection)::

    from workers.client import TaskClient

    tasks = TaskClient(settings)
    task_id = tasks.enqueue_warmup("critical")
    tasks.enqueue_member_change("update", 42)
    tasks.enqueue_bulk_operation("import", 10_000)        # [task id]
    tasks.enqueue_bulk_operation("update", 25_000, ids)   # ids: 3 messages of <= MAX_IDS
    tasks.progress(task_id)   # Progress(state="PROGRESS", done=1200, total=5003, ...)

Every call is a single LPUSH on the broker and returns the task id at once; nothing here
waits for a result. Messages are JSON, sent with the task's name on the task's queue (the
table in workers/routing.py), so a worker routes and runs them exactly as if the task had
been called directly. The argument vocabularies (member actions, bulk kinds) and the id
limit are the table's too, so client and task refuse the same things: ``enqueue_*`` raise
ValueError for arguments the task would refuse, before anything is sent, and kombu's
OperationalError when the broker cannot be reached.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from celery.result import AsyncResult

from cache.kinds import WARMUPS
from config import Settings
from workers import routing
from workers.alerts import Alert
from workers.factory import create_app
from workers.runtime import CacheCelery

WARMUP_KINDS: Final = WARMUPS  # from the registry of cached kinds
# Publishing an alert gives up after about a second (kombu's retry policy) rather than the
# ~18 s of celeryconfig's task_publish_retry_policy: whoever raised it (a report, a request)
# must not wait on a broker outage; the sender dead-letters what was not taken
# (workers/alerts.py).
ALERT_PUBLISH_RETRY: Final = {
    "max_retries": 3,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}


@dataclass(frozen=True, slots=True)
class Progress:
    """What a client can know about a task without waiting for it.

    state: PENDING (unknown or queued), STARTED, PROGRESS, RETRY, SUCCESS or FAILURE.
    done/total: from PROGRESS meta, or from the final result of a warm-up.
    """

    task_id: str
    state: str
    done: int | None = None
    total: int | None = None
    result: Any = None  # the task's return value once SUCCESS
    error: str | None = None  # "ExceptionType: message" once FAILURE (or the RETRY cause)

    @property
    def ready(self) -> bool:
        return self.state in ("SUCCESS", "FAILURE", "REVOKED")

    @property
    def fraction(self) -> float | None:
        if self.done is None or not self.total:
            return None
        return min(1.0, self.done / self.total)


class TaskClient:
    def __init__(self, settings: Settings, app: CacheCelery | None = None) -> None:
        # A producer: the app is never started as a worker here, so no task module is
        # imported and the runtime (cache, database) is never built in this process.
        self.app = app if app is not None else create_app(settings)

    def close(self) -> None:
        self.app.close()

    def send(self, spec: routing.TaskSpec, *args: Any) -> str:
        """Send one task by name on its own queue; the task id."""
        result = self.app.send_task(spec.name, args=list(args), queue=spec.queue)
        return str(result.id)

    def enqueue_warmup(self, kind: str, ids: Iterable[int] | None = None) -> str:
        """kind: one of cache.kinds.WARMUPS: critical | all | members (with ids) | a data
        type with a warmed kind (lookup, analytics, statistics, member)."""
        if kind not in WARMUP_KINDS:
            raise ValueError(f"unknown warm-up {kind!r}; expected one of {WARMUP_KINDS}")
        if (kind == "members") != (ids is not None):
            raise ValueError('ids go with kind "members", and only with it')
        if kind == "critical":
            return self.send(routing.WARMUP_CRITICAL)
        if kind == "all":
            return self.send(routing.WARMUP_ALL)
        if kind == "members":
            wanted = [_positive_int(member_id, "member id") for member_id in ids or ()]
            if not wanted or len(wanted) > routing.MAX_IDS:
                raise ValueError(f"between 1 and {routing.MAX_IDS} ids, got {len(wanted)}")
            return self.send(routing.WARMUP_MEMBERS, wanted)
        return self.send(routing.WARMUP_DATA_TYPE, kind)

    def enqueue_auto_warm(self, reason: str, *, only_if_cold: bool = False) -> str:
        """The automatic warm-up (tasks/autowarm.py): the critical warm-up under the
        cluster-wide lease; ``reason`` says why (the result and the dashboard show it)."""
        if reason not in routing.AUTO_WARM_REASONS:
            raise ValueError(
                f"unknown warm-up reason {reason!r}; expected one of {routing.AUTO_WARM_REASONS}"
            )
        result = self.app.send_task(
            routing.AUTO_WARM.name,
            args=[reason],
            kwargs={"only_if_cold": only_if_cold},
            queue=routing.AUTO_WARM.queue,
        )
        return str(result.id)

    def enqueue_member_change(self, action: str, member_id: int) -> str:
        """After a member's create, update or delete has committed."""
        if action not in routing.MEMBER_ACTIONS:
            raise ValueError(
                f"unknown member action {action!r}; expected one of {routing.MEMBER_ACTIONS}"
            )
        return self.send(routing.ON_MEMBER_CHANGE, action, _positive_int(member_id, "member id"))

    def enqueue_bulk_operation(
        self, kind: str, affected_count: int, member_ids: Iterable[int] | None = None
    ) -> list[str]:
        """After a bulk import, update or delete of ``affected_count`` members has committed;
        the task ids.

        With ``member_ids`` (the affected members, positive integers) their cached records go
        too. A message names at most routing.MAX_IDS of them: a longer list is sent as one
        message per chunk, each a complete bulk operation (the aggregates' tags are bumped
        once per message, which costs one INCR each). Every id is checked before anything is
        sent, so a bad one sends nothing.
        """
        if kind not in routing.BULK_KINDS:
            raise ValueError(
                f"unknown bulk operation {kind!r}; expected one of {routing.BULK_KINDS}"
            )
        count = int(affected_count)
        if count < 0:
            raise ValueError("affected_count must be >= 0")
        if member_ids is None:
            return [self.send(routing.ON_BULK_OPERATION, kind, count)]
        wanted = list(dict.fromkeys(_positive_int(i, "member id") for i in member_ids))
        if not wanted or not count:
            raise ValueError("member ids go with a bulk operation that touched members")
        step = routing.MAX_IDS
        return [
            self.send(routing.ON_BULK_OPERATION, kind, count, wanted[start : start + step])
            for start in range(0, len(wanted), step)
        ]

    def enqueue_alert(self, alert: dict[str, Any]) -> str:
        """Deliver one alert document (workers.alerts.Alert.as_json) to the webhook; checked
        before sending, published with a short retry (ALERT_PUBLISH_RETRY).

        Its result is not stored (``ignore_result``): nobody waits for a delivery, whose
        outcome is the receiver's, the log's and the dead letters'; and sending then never
        waits on the result backend (Celery subscribes to a result's channel before
        publishing, and on a Redis that is down retries that for about 20 s). Flower still
        shows the task's states, from the worker's events.
        """
        document = Alert.from_json(alert).as_json()
        spec = routing.DELIVER_ALERT
        result = self.app.send_task(
            spec.name,
            args=[document],
            queue=spec.queue,
            retry=True,
            retry_policy=ALERT_PUBLISH_RETRY,
            ignore_result=True,
        )
        return str(result.id)

    def progress(self, task_id: str) -> Progress:
        """The task's state from the result backend: one GET, never a wait."""
        result: AsyncResult[Any] = AsyncResult(task_id, app=self.app)
        state = str(result.state)
        info = result.info
        if state == "PROGRESS" and isinstance(info, dict):
            return Progress(
                task_id, state, _int_or_none(info.get("done")), _int_or_none(info.get("total"))
            )
        if state == "SUCCESS":
            done = total = None
            if isinstance(info, dict):
                done, total = _int_or_none(info.get("done")), _int_or_none(info.get("total"))
            return Progress(task_id, state, done, total, result=info)
        if isinstance(info, BaseException):
            return Progress(task_id, state, error=f"{type(info).__name__}: {info}")
        return Progress(task_id, state)


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
