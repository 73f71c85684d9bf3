"""The metrics snapshot task (queue metrics), sent by beat every minute.

A snapshot is this worker process's cache counters (CacheService.metrics.snapshot()) plus a
few Redis INFO fields. It is taken at most once per minute (the period guard), so two beats
do not double it. Storing it is a seam, :func:`store_snapshot`, which does nothing yet: the
PostgreSQL table, the per-process counters flushed to Redis and the pruning of old rows
come with the metrics work of issue 4.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Final

from celery import Task, shared_task
from redis.exceptions import RedisError

from cache import CacheService
from cache.errors import CacheUnavailable
from workers import routing
from workers.runtime import Runtime, runtime_of

# INFO fields kept, by section (https://redis.io/docs/latest/commands/info/).
INFO_FIELDS: Final = (
    "redis_version",
    "uptime_in_seconds",
    "used_memory",
    "used_memory_peak",
    "maxmemory",
    "maxmemory_policy",
    "mem_fragmentation_ratio",
    "keyspace_hits",
    "keyspace_misses",
    "evicted_keys",
    "expired_keys",
    "connected_clients",
    "role",
    "connected_slaves",
)


def redis_info(cache: CacheService) -> dict[str, Any]:
    """The INFO_FIELDS of the master, one round trip; CacheUnavailable when it fails."""
    try:
        info = cache.clients.writer.info()
    except RedisError as exc:
        raise CacheUnavailable(f"INFO failed: {exc}") from exc
    return {name: info[name] for name in INFO_FIELDS if name in info}


def take_snapshot(cache: CacheService) -> dict[str, Any]:
    return {
        "taken_at": time.time(),
        "process": {"host": socket.gethostname(), "pid": os.getpid()},
        "cache": cache.metrics.snapshot(),
        "redis": redis_info(cache),
    }


def store_snapshot(runtime: Runtime, snapshot: dict[str, Any]) -> bool:
    """Persist one snapshot. The seam for the PostgreSQL row; returns whether it was stored."""
    return False


@shared_task(bind=True, **routing.task_options(routing.METRICS_SNAPSHOT))
def snapshot(self: Task[Any, Any], period: str | None = None) -> dict[str, Any]:
    """Take (and, later, store) this minute's snapshot; a second call this minute is a no-op."""
    runtime = runtime_of(self)

    def body() -> dict[str, Any]:
        taken = take_snapshot(runtime.cache)
        return {"snapshot": taken, "stored": store_snapshot(runtime, taken)}

    token = self.request.id or "direct"
    return runtime.guard.run_once("metrics_snapshot", "minute", period, token, body).as_dict()
