"""The write-behind flush task (queue cache.writebehind): drain the activity stream for a while.

Beat sends it every ``routing.DRAIN_SECONDS`` (its TaskSpec in workers/routing.py); each run
drains for up to that long, so one run follows another and the lag stays near the linger time.
Runs on several workers coordinate through the stream's pending list (cache/writebehind/):
one applies, the others wait. With
``writebehind_partitions`` > 1 a run sent without a partition sends one run per partition
and returns: the partitions flush side by side, each in order, each exactly once.
A database or Redis outage fails the run with a retry (backoff, jitter); the entries stay
pending in Redis and are applied first by the next run, exactly once.

The consumer name is stable per worker process (worker name + pool index), so a worker
restarted under the same name resumes its own pending entries at once instead of waiting
``claim_idle_ms`` for another consumer to claim them. Each worker process keeps one database
engine and one Flusher per (consumer, partition): the runtime part FLUSHERS, closed with the
process's runtime.
"""

from __future__ import annotations

import os
from typing import Any, Final

from billiard.process import current_process
from celery import Task, shared_task
from sqlalchemy import Engine

from cache.errors import CacheUnavailable
from cache.writebehind import (
    ActivityRow,
    Apply,
    BatchOverlap,
    Flusher,
    Unwritable,
    WriteBehindConfig,
)
from db import writebehind as db_writebehind
from db.errors import DatabaseUnavailable, InvalidData
from services import Services
from tasks.runtime import TaskRuntime, runtime_of
from workers import routing
from workers.runtime import Part

FLUSH_WRITEBEHIND: Final = routing.FLUSH_WRITEBEHIND
RETRY_ON: Final = (DatabaseUnavailable, CacheUnavailable)


def sql_apply(engine: Engine) -> Apply:
    """``apply`` for the flusher: db.writebehind.apply_batch, its errors in the cache's terms."""

    def apply(stream: str, first_id: str, last_id: str, rows: Any) -> bool:
        batch: list[ActivityRow] = rows
        try:
            return db_writebehind.apply_batch(
                engine, stream, last_id, batch, batch_first_id=first_id
            )
        except db_writebehind.UnknownMembers as exc:
            raise Unwritable(exc.member_ids, str(exc)) from exc
        except db_writebehind.BatchOverlap as exc:
            raise BatchOverlap(exc.applied_through) from exc
        except InvalidData as exc:
            raise Unwritable((), str(exc)) from exc

    return apply


def consumer_name(task: Task[Any, Any]) -> str:
    index = getattr(current_process(), "index", None)
    return f"{task.request.hostname or 'worker'}/{os.getpid() if index is None else index}"


class Flushers:
    """One process's flushers, by (consumer, partition), over its services' write-behind
    buffer and database engine."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.by_consumer: dict[tuple[str, int], Flusher] = {}


FLUSHERS: Final[Part[Flushers]] = Part("writebehind_flushers", Flushers)


def flusher_of(runtime: TaskRuntime, consumer: str, partition: int = 0) -> Flusher:
    """This process's flusher of a partition, built on first use."""
    flushers = runtime.worker.part(FLUSHERS)
    if (consumer, partition) not in flushers.by_consumer:
        services = flushers.services
        flushers.by_consumer[consumer, partition] = Flusher(
            services.writebehind, sql_apply(services.engine), consumer, partition
        )
    return flushers.by_consumer[consumer, partition]


@shared_task(
    bind=True,
    acks_late=True,  # a worker lost mid-run: the message is delivered again
    **routing.task_options(FLUSH_WRITEBEHIND, retry_on=RETRY_ON),
)
def flush_writebehind(
    self: Task[Any, Any], seconds: float = routing.DRAIN_SECONDS, partition: int | None = None
) -> dict[str, Any]:
    """Drain a partition for up to ``seconds`` (capped below the soft time limit); counts of
    this run. Without a partition: the only one, or one run sent per partition."""
    runtime = runtime_of(self)
    partitions = WriteBehindConfig.from_settings(runtime.settings).partitions
    if partition is None and partitions > 1:
        for index in range(partitions):
            self.apply_async(kwargs={"seconds": seconds, "partition": index})
        return {"partitions": partitions}
    if not 0 <= (partition := partition or 0) < partitions:
        raise ValueError(f"partition {partition} not in 0..{partitions - 1}")
    flusher = flusher_of(runtime, consumer_name(self), partition)
    stats = flusher.stats
    before = (stats.batches, stats.events, stats.rows, stats.dead_lettered)
    flusher.drain(min(float(seconds), FLUSH_WRITEBEHIND.soft_time_limit - 5.0))
    health = flusher.wb.health()
    after = (stats.batches, stats.events, stats.rows, stats.dead_lettered)
    batches, events, rows, dead = (a - b for a, b in zip(after, before, strict=True))
    return {
        "consumer": flusher.consumer,
        "partition": partition,
        "batches": batches,
        "events": events,
        "rows": rows,
        "dead_lettered": dead,
        "backlog": health.backlog,
        "lag_seconds": round(health.lag_seconds, 3),
    }
