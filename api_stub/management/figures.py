"""The figures of GET /metrics and of the Prometheus text: live counters and the last snapshot.

this_process  the serving API process's cache counters (cache.metrics), per data type
              and overall, with hit and error rates; breaker and outbox
processes     every other process that publishes its counters (workers/publisher.py):
              role, age of the publication, per-type counters. This API process publishes
              too (api_stub/app.py), under ``this_process.process``: it is counted live,
              never a second time from its publication
overall       the sum of the two, per data type and overall, with hit and error rates
latency       request latency of this process's cached routes, cached vs uncached
              (p50/p95/p99), all kinds together (``requests``) and per kind (``by_kind``), and
              the loaders' time per data type (the uncached work itself); over time and
              across processes: GET /metrics/history
redis         INFO of the master: memory vs maxmemory, keyspace hits/misses, evictions,
              its replicas with their lag
writebehind   backlog, lag, dead letters
keyspace      the key distribution by pattern (count and bytes) of the latest snapshot:
              sampling the keyspace is the snapshot job's work, once a minute
consistency   the consistency monitor (cache/consistency.py): per window the sampled writes
              checked and found consistent, their ratio and nines; its own cost
"""

from __future__ import annotations

import math
import time
from typing import Any, Final

from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from api_stub.management.runtime import ManagementRuntime
from cache.errors import CacheError
from cache.metrics import COUNTER_NAMES as COUNTERS
from cache.metrics import rates
from cache.replication import replica_entries
from workers.publisher import read_published

REDIS_FIELDS: Final = (
    "used_memory",
    "used_memory_peak",
    "maxmemory",
    "maxmemory_policy",
    "keyspace_hits",
    "keyspace_misses",
    "evicted_keys",
    "expired_keys",
    "connected_clients",
    "role",
    "connected_slaves",
)


def _counters(by_type: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {
        name: {counter: int(values.get(counter, 0)) for counter in COUNTERS}
        for name, values in by_type.items()
    }


def _with_rates(by_type: dict[str, dict[str, int]]) -> dict[str, Any]:
    total = {c: sum(values[c] for values in by_type.values()) for c in COUNTERS}
    return {
        "by_type": {name: values | rates(values) for name, values in by_type.items()},
        "total": total | rates(total),
    }


async def published(m: ManagementRuntime) -> dict[str, dict[str, Any]]:
    """The published documents of live processes (two round trips, in the threadpool)."""
    documents = await run_in_threadpool(read_published, m.sync_cache, m.services.redis("durable"))
    now = time.time()
    return {
        name: {
            "role": doc.get("role"),
            "age_s": round(now - float(doc.get("published_at") or now), 1),
            "breaker": (doc.get("snapshot") or {}).get("breaker", {}).get("state"),
            "counters": _counters((doc.get("snapshot") or {}).get("by_type") or {}),
        }
        for name, doc in documents.items()
        if name != m.process
    }


async def redis_figures(m: ManagementRuntime) -> dict[str, Any]:
    info = await m.cache.info()
    if info is None:
        return {"up": False}
    kept: dict[str, Any] = {name: info[name] for name in REDIS_FIELDS if name in info}
    limit = int(kept.get("maxmemory") or 0)
    kept["memory_ratio"] = round(int(kept.get("used_memory", 0)) / limit, 4) if limit else None
    offset = int(info.get("master_repl_offset") or 0)
    kept["replicas"] = [
        {
            "address": f"{entry.get('ip', '?')}:{entry.get('port', '?')}",
            "state": entry.get("state"),
            "lag_s": int(entry.get("lag") or 0),
            "behind_bytes": max(offset - int(entry.get("offset") or 0), 0),
        }
        for entry in replica_entries(info)
    ]
    return {"up": True} | kept


async def writebehind_figures(m: ManagementRuntime) -> dict[str, Any]:
    try:
        health = await run_in_threadpool(m.writebehind.health)
    except CacheError as exc:
        return {"available": False, "error": str(exc)}
    return {
        "available": True,
        "backlog": health.backlog,
        "pending": health.pending,
        "lag_s": round(health.lag_seconds, 3),
        "dead_letters": health.dead_letters,
    }


async def consistency_figures(m: ManagementRuntime) -> dict[str, Any]:
    try:
        found = await m.services.consistency.aread(m.services.async_redis("durable"))
    except RedisError as exc:
        return {"available": False, "error": str(exc)}
    return {"available": True} | found


async def figures(m: ManagementRuntime) -> dict[str, Any]:
    live = m.cache.snapshot()
    mine = _counters(live["by_type"])
    processes = await published(m)
    overall: dict[str, dict[str, int]] = {name: dict(values) for name, values in mine.items()}
    for process in processes.values():
        for name, values in process["counters"].items():
            into = overall.setdefault(name, dict.fromkeys(COUNTERS, 0))
            for counter in COUNTERS:
                into[counter] += values.get(counter, 0)
    snapshot = await m.snapshot.get()
    payload = (snapshot or {}).get("payload") or {}
    return {
        "taken_at": time.time(),
        "this_process": {
            "process": m.process,
            "started_at": live["started_at"],
            **_with_rates(mine),
            "breaker": live["breaker"],
            "breaker_skips": live["breaker_skips"],
            "outbox_pending": live["outbox_pending"],
        },
        "processes": {
            name: {k: v for k, v in doc.items() if k != "counters"} | _with_rates(doc["counters"])
            for name, doc in processes.items()
        },
        "overall": _with_rates(overall),
        "latency": {
            "requests": m.latency.snapshot(),
            "by_kind": m.latency.by_kind_snapshot(),
            "loads_by_type": {
                name: {q: values["load_seconds"][q] for q in ("count", "p50", "p95", "p99")}
                for name, values in live["by_type"].items()
            },
        },
        "redis": await redis_figures(m),
        "writebehind": await writebehind_figures(m),
        "consistency": await consistency_figures(m),
        "keyspace": payload.get("keyspace"),
        "snapshot_taken_at": (snapshot or {}).get("taken_at"),
    }


def json_safe(value: Any) -> Any:
    """Histogram quantiles may be +Inf, which JSON cannot carry: rendered as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
