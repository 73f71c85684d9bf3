"""Warm-up tasks (queue cache.warmup). Progress: state PROGRESS, meta {"done", "total"}.

Retried on connection errors (Redis or the database) with exponential backoff and jitter;
a warm-up repeated from the start writes the same values again, so late acks are safe.

A warm-up of every member larger than ``Settings.cache_warmup_chunk_size`` (``warmup_all``,
``warmup_data_type("member")``) becomes a chord of chunk tasks that every worker process
shares, still followed as one task id (tasks/chunks.py).
"""

from __future__ import annotations

from typing import Any, Final

from celery import Task, shared_task

from cache.errors import CacheUnavailable
from db.errors import DatabaseUnavailable
from tasks import chunks, warming
from tasks.runtime import runtime_of
from workers import routing
from workers.routing import MAX_IDS

# Connection errors only: Redis or the database away. Anything else is a bug or bad input.
RETRY_ON: Final = (CacheUnavailable, DatabaseUnavailable)


def progress_of(task: Task[Any, Any]) -> warming.Progress:
    """Relay (done, total) to the result backend, where the client and Flower read it."""

    def report(done: int, total: int) -> None:
        task.update_state(state="PROGRESS", meta={"done": done, "total": total})

    return report


@shared_task(bind=True, **routing.task_options(routing.WARMUP_CRITICAL, retry_on=RETRY_ON))
def warmup_critical(self: Task[Any, Any], hottest: int = warming.HOTTEST) -> dict[str, Any]:
    """Lookups, analytics, statistics and the ``hottest`` most active members."""
    runtime = runtime_of(self)
    report = warming.warm_critical(
        runtime.cache, runtime.source, hottest=int(hottest), progress=progress_of(self)
    )
    return report.as_dict()


@shared_task(bind=True, **routing.task_options(routing.WARMUP_ALL, retry_on=RETRY_ON))
def warmup_all(self: Task[Any, Any]) -> dict[str, Any]:
    """Every member in batches of warming.BATCH_SIZE, then the aggregates."""
    if (skipped := chunks.start(self, aggregates=True)) is not None:
        return skipped
    runtime = runtime_of(self)
    report = warming.warm_everything(runtime.cache, runtime.source, progress=progress_of(self))
    return report.as_dict()


@shared_task(bind=True, **routing.task_options(routing.WARMUP_MEMBERS, retry_on=RETRY_ON))
def warmup_members(self: Task[Any, Any], ids: list[int]) -> dict[str, Any]:
    """The given member ids (at most MAX_IDS); unknown ids are counted as missing."""
    if len(ids) > MAX_IDS:
        raise ValueError(f"{len(ids)} ids in one message; at most {MAX_IDS}")
    runtime = runtime_of(self)
    report = warming.warm_members(runtime.cache, runtime.source, ids, progress=progress_of(self))
    return report.as_dict()


@shared_task(bind=True, **routing.task_options(routing.WARMUP_DATA_TYPE, retry_on=RETRY_ON))
def warmup_data_type(self: Task[Any, Any], name: str) -> dict[str, Any]:
    """One data type of cache.kinds.KINDS.warmable_types ("member": every member)."""
    every_member = warming.warms_every_member(warming.warmable_type(name))
    if every_member and (skipped := chunks.start(self, aggregates=False)) is not None:
        return skipped
    runtime = runtime_of(self)
    report = warming.warm_data_type(runtime.cache, runtime.source, name, progress=progress_of(self))
    return report.as_dict()
