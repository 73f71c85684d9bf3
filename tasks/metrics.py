"""The metrics snapshot task (queue metrics), sent by beat every minute.

A snapshot is one row of ``metrics_snapshots`` (db/reports.py)::

    processes  every live process's cache counters, as published to Redis
               (workers/publisher.py), compacted (tasks/counters.py)
    total      their sum, per data type and overall, with hit and error rates
    redis      INFO fields: memory, hit/miss counts, evictions, replication, persistence
    keyspace   the key distribution by pattern (tasks/keyspace.py: sampled SCAN + MEMORY USAGE)
    latency    request latency per kind, cached vs uncached (p50/p95/p99 and the buckets), of
               what the API processes served since the previous snapshot
               (tasks/counters.latency_interval: each process keeps its cumulative buckets
               under ``processes``, the next snapshot's baseline)

It is taken at most once per minute (the period guard, its cadence and job name on its
TaskSpec in workers/routing.py), so two beats do not double it, and
rows older than RETENTION are pruned in the same run: the monthly capacity analysis reads a
month of them back.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from celery import Task, shared_task

from cache import CacheService
from cache.errors import CacheUnavailable
from cache.replication import replica_entries
from db.errors import DatabaseUnavailable
from tasks import counters, keyspace
from tasks.records import Records
from tasks.runtime import runtime_of
from workers import routing
from workers.publisher import MetricsPublisher, read_published

# Kept long enough for the monthly capacity analysis to see a whole month and its neighbours.
RETENTION: Final = dt.timedelta(days=35)

# INFO fields kept, by section (https://redis.io/docs/latest/commands/info/).
INFO_FIELDS: Final = (
    # server
    "redis_version",
    "run_id",
    "uptime_in_seconds",
    # memory
    "used_memory",
    "used_memory_rss",
    "used_memory_peak",
    "maxmemory",
    "maxmemory_policy",
    "mem_fragmentation_ratio",
    # stats
    "keyspace_hits",
    "keyspace_misses",
    "evicted_keys",
    "expired_keys",
    "total_commands_processed",
    "instantaneous_ops_per_sec",
    "rejected_connections",
    # clients
    "connected_clients",
    "blocked_clients",
    # persistence
    "rdb_last_save_time",
    "rdb_last_bgsave_status",
    "aof_enabled",
    # replication
    "role",
    "connected_slaves",
    "master_link_status",
    "master_repl_offset",
)

RETRY_ON: Final = (CacheUnavailable, DatabaseUnavailable)


def redis_info(cache: CacheService) -> dict[str, Any]:
    """INFO_FIELDS of the master, its replicas' lag, and the keyspace: one round trip."""
    info = cache.info()
    if info is None:
        raise CacheUnavailable("INFO failed: Redis unavailable")
    kept: dict[str, Any] = {name: info[name] for name in INFO_FIELDS if name in info}
    offset = int(info.get("master_repl_offset", 0))
    replicas = []
    for value in replica_entries(info):
        replicas.append(
            {
                "address": f"{value.get('ip')}:{value.get('port')}",
                "state": value.get("state"),
                "lag_bytes": max(0, offset - int(value.get("offset", 0))),
                "lag_seconds": value.get("lag"),
            }
        )
    kept["replicas"] = replicas
    kept["keyspace"] = {
        name: value
        for name, value in info.items()
        if name.startswith("db") and name[2:].isdigit() and isinstance(value, dict)
    }
    return kept


def take_snapshot(
    cache: CacheService,
    publisher: MetricsPublisher | None = None,
    *,
    previous: dict[str, Any] | None = None,
    sample: int = keyspace.SAMPLE,
) -> dict[str, Any]:
    """The snapshot payload. ``publisher`` (this process's) publishes first, so the counters
    of the process taking the snapshot are as fresh as the snapshot itself, and the documents
    are read where it publishes them (the durable role). ``previous`` is the payload of the
    last stored snapshot, the baseline of the latency interval."""
    client = None
    if publisher is not None:
        publisher.publish()
        client = publisher.client
    processes = {
        name: counters.compact(document) for name, document in read_published(cache, client).items()
    }
    return {
        "taken_at": dt.datetime.now(dt.UTC).isoformat(),
        "processes": processes,
        "total": counters.merge(processes),
        "latency": counters.latency_interval(previous, processes),
        "redis": redis_info(cache),
        "keyspace": keyspace.distribution(cache, sample=sample),
    }


def store_snapshot(
    records: Records,
    cache: CacheService,
    publisher: MetricsPublisher | None = None,
    *,
    sample: int = keyspace.SAMPLE,
) -> dict[str, Any]:
    """Take a snapshot over the last stored one, store it, prune old ones: the task's body."""
    latest = records.latest_snapshot()
    payload = take_snapshot(
        cache, publisher, previous=latest["payload"] if latest else None, sample=sample
    )
    taken_at = dt.datetime.fromisoformat(payload["taken_at"])
    # Prune first: if storing fails the retry finds nothing pruned twice, nothing stored.
    pruned = records.prune_snapshots(taken_at - RETENTION)
    row = records.add_snapshot(taken_at, payload)
    total = payload["total"]["total"]
    return {
        "id": row,
        "processes": payload["total"]["processes"],
        "hit_rate": total["hit_rate"],
        "used_memory": payload["redis"].get("used_memory"),
        "pruned": pruned,
    }


SPEC: Final = routing.METRICS_SNAPSHOT


@shared_task(bind=True, **routing.task_options(SPEC, retry_on=RETRY_ON))
def snapshot(self: Task[Any, Any], period: str | None = None) -> dict[str, Any]:
    """Take and store this minute's snapshot, prune old ones; a second call this minute is a
    no-op."""
    runtime = runtime_of(self)

    def body() -> dict[str, Any]:
        return store_snapshot(runtime.records, runtime.cache, runtime.publisher)

    token = self.request.id or "direct"
    return runtime.guard.run_once(
        SPEC.guarded_job, SPEC.guarded_cadence, period, token, body
    ).as_dict()
