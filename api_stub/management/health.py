"""The health checks of GET /api/v1/cache/health, run concurrently, each within a timeout.

    redis         every node answers PING: the master (the writer), the read replica pool
                  when reads go to replicas, each Sentinel, each Cluster node
    replication   the master is a master; each replica is online and within the lag bound
                  (Sentinel's view of its replicas, else the master's INFO); at least
                  ``expected_replicas`` of them on a standalone master
    memory        used_memory / maxmemory below the bound (no maxmemory: shown, not judged)
    cache         hit rate above its floor and error rate below its bound, over the last
                  ``health_window_s`` of the cluster-wide metrics snapshots (every process's
                  counters: tasks/counters.py Window); this process's live counters when
                  there are no snapshots yet. Judged only past ``min_lookups`` lookups.
    breaker       the circuit breaker is closed
    writebehind   the oldest unflushed event is younger than the bound, the backlog not full
    workers       at least one worker answers ``celery inspect ping``
    beat          the beat leader lease is held, or the last metrics snapshot is recent
    database      the API's database answers

Each check gives ``{"ok": bool, ...figures}``; the answer names the failing ones.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api_stub.management.config import ManagementConfig
from api_stub.management.runtime import ManagementRuntime
from cache.errors import CacheError
from cache.flow import UNAVAILABLE
from cache.metrics import COUNTER_NAMES, rates
from cache.replication import replica_entries
from db import reports
from db.errors import DataError
from tasks.counters import Window

Check = Callable[[ManagementRuntime], Awaitable[dict[str, Any]]]
Info = dict[str, Any]

BEAT_LEASE_PARTS: Final = ("beat", "leader")  # workers/scheduler.py: <prefix>sys:beat:leader


async def _ping(client: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await client.ping()
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 3)}


def _address(client: Any) -> str:
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


async def redis_nodes(m: ManagementRuntime) -> dict[str, Any]:
    clients = m.cache.clients
    nodes: dict[str, Any] = {}
    if clients.mode == "cluster":
        writer: Any = clients.writer
        for node in writer.get_nodes():
            started = time.perf_counter()
            entry: dict[str, Any]
            try:
                await writer.ping(target_nodes=node)
                entry = {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1e3, 3)}
            except Exception as exc:
                entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            nodes[f"{node.server_type}:{node.name}"] = entry
    else:
        nodes["master"] = await _ping(clients.writer)
        if clients.reader is not clients.writer:
            nodes["replica_pool"] = await _ping(clients.reader)
        if clients.sentinel is not None:
            for sentinel in clients.sentinel.sentinels:
                nodes[f"sentinel:{_address(sentinel)}"] = await _ping(sentinel)
    return {"ok": all(node["ok"] for node in nodes.values()), "nodes": nodes}


async def _master_info(m: ManagementRuntime) -> Info:
    info = await m.cache.info()
    if info is None:
        raise CacheError("INFO failed: Redis unavailable")
    return info


async def replication(m: ManagementRuntime) -> dict[str, Any]:
    clients, limit = m.cache.clients, m.config.max_replica_lag_s
    if clients.mode == "cluster":
        return {"ok": True, "mode": "cluster", "note": "replicas are checked as cluster nodes"}
    info = await _master_info(m)
    replicas: list[dict[str, Any]] = []
    if clients.sentinel is not None:
        name = m.settings.redis_sentinel_master
        for state in await _sentinel_replicas(clients.sentinel.sentinels, name):
            replicas.append(
                {
                    "address": f"{state.get('ip')}:{state.get('port')}",
                    "ok": not state.get("is_sdown")
                    and not state.get("is_odown")
                    and state.get("master-link-status", "ok") == "ok",
                    "flags": sorted(state.get("flags") or ())
                    if isinstance(state.get("flags"), set)
                    else state.get("flags"),
                }
            )
    else:
        for value in replica_entries(info):
            lag = value.get("lag")
            replicas.append(
                {
                    "address": f"{value.get('ip')}:{value.get('port')}",
                    "state": value.get("state"),
                    "lag_s": lag,
                    "ok": value.get("state") == "online" and (lag is None or float(lag) <= limit),
                }
            )
    role = info.get("role")
    expected = m.config.expected_replicas if clients.sentinel is None else 0
    ok = role == "master" and all(r["ok"] for r in replicas) and len(replicas) >= expected
    return {"ok": ok, "role": role, "replicas": replicas, "expected_replicas": expected}


async def _sentinel_replicas(sentinels: list[Any], name: str) -> list[dict[str, Any]]:
    errors = []
    for sentinel in sentinels:  # the first Sentinel that answers speaks for all
        try:
            return list(await sentinel.sentinel_slaves(name))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    raise CacheError(f"no Sentinel answered SENTINEL REPLICAS: {errors}")


async def memory(m: ManagementRuntime) -> dict[str, Any]:
    info = await _master_info(m)
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0) or 0)
    ratio = round(used / limit, 4) if limit else None
    return {
        "ok": ratio is None or ratio < m.config.max_memory_ratio,
        "used_memory": used,
        "maxmemory": limit,
        "ratio": ratio,
        "policy": info.get("maxmemory_policy"),
        "evicted_keys": info.get("evicted_keys"),
    }


def judge_rates(totals: Mapping[str, float], config: ManagementConfig) -> dict[str, Any]:
    """The cache check's verdict on summed counters: hit rate >= ``min_hit_rate`` and error
    rate <= ``max_error_rate``, each judged only past ``min_lookups`` lookups."""
    figures = rates(totals)
    judged = figures["lookups"] >= config.min_lookups
    hit, error = figures["hit_rate"], figures["error_rate"]
    hit_ok = not judged or hit is None or hit >= config.min_hit_rate
    error_ok = not judged or error is None or error <= config.max_error_rate
    failing = [name for name, ok in (("hit_rate", hit_ok), ("error_rate", error_ok)) if not ok]
    return {
        "ok": not failing,
        **figures,
        "judged": judged,
        "failing": failing,
        "min_hit_rate": config.min_hit_rate,
        "max_error_rate": config.max_error_rate,
    }


async def cache_rates(m: ManagementRuntime) -> dict[str, Any]:
    end = dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(seconds=m.config.health_window_s)

    def fold(session: Any) -> Window:
        baseline = reports.snapshot_before(session, start)
        return Window().fold(baseline, reports.iter_snapshots(session, start, end))

    try:
        window: Window | None = await m.db.read(fold)
    except DataError:
        window = None
    if window is not None and window.snapshots:
        totals, source = window.total(), "snapshots"
    else:  # no history yet: what this process counted
        snapshot = m.cache.snapshot()
        totals = dict(snapshot["total"])
        source = "this process"
    counted = {name: float(totals.get(name) or 0) for name in COUNTER_NAMES}
    return judge_rates(counted, m.config) | {"source": source, "window_s": m.config.health_window_s}


async def durable(m: ManagementRuntime) -> dict[str, Any]:
    """The durable role's master (write-behind, the broker, platform state) and how many
    replicas follow it: with none, write-behind refuses events (WAIT, min-replicas-to-write).
    One Redis for both roles: the redis and replication checks above are its checks."""
    if m.settings.durable_is_cache:
        return {"ok": True, "same_as": "redis"}
    client = m.services.async_redis("durable")
    result = await _ping(client)
    if not result["ok"]:
        return result
    info = await client.info("replication")
    replicas = int(info.get("connected_slaves", 0))
    ok = info.get("role") == "master" and replicas >= m.settings.writebehind_replicas
    return result | {"ok": ok, "role": info.get("role"), "replicas": replicas}


async def breaker(m: ManagementRuntime) -> dict[str, Any]:
    state = m.cache.breaker.state.value
    return {"ok": state == "closed", "state": state, "times_opened": m.cache.breaker.times_opened}


async def writebehind(m: ManagementRuntime) -> dict[str, Any]:
    health = await run_in_threadpool(m.writebehind.health)
    ok = health.lag_seconds <= m.config.max_writebehind_lag_s and not health.saturated
    return {
        "ok": ok,
        "backlog": health.backlog,
        "pending": health.pending,
        "lag_s": round(health.lag_seconds, 3),
        "dead_letters": health.dead_letters,
        "max_backlog": health.max_backlog,
    }


async def workers(m: ManagementRuntime) -> dict[str, Any]:
    timeout = m.config.ping_timeout_s
    names = await m.ping_workers(timeout)
    return {"ok": bool(names), "answered": names, "timeout_s": timeout}


async def beat(m: ManagementRuntime) -> dict[str, Any]:
    key = m.cache.keys.system(*BEAT_LEASE_PARTS)
    # The lease is platform state: the durable role's client, through the breaker.
    lease_ms = await m.cache.run(m.services.async_redis("durable").pttl, key)
    lease = None if lease_ms is UNAVAILABLE or int(lease_ms) < 0 else int(lease_ms)
    age: float | None = None
    latest = await m.snapshot.get()
    if latest is not None and latest["taken_at"]:
        taken = dt.datetime.fromisoformat(latest["taken_at"])
        age = round((dt.datetime.now(dt.UTC) - taken).total_seconds(), 1)
    ok = lease is not None or (age is not None and age <= m.config.beat_max_age_s)
    return {"ok": ok, "leader_lease_ms": lease, "last_snapshot_age_s": age}


async def database(m: ManagementRuntime) -> dict[str, Any]:
    started = time.perf_counter()
    await m.db.read(lambda session: session.execute(text("SELECT 1")).scalar_one())
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 3)}


CHECKS: Final[dict[str, Check]] = {
    "redis": redis_nodes,
    "replication": replication,
    "durable": durable,
    "memory": memory,
    "cache": cache_rates,
    "breaker": breaker,
    "writebehind": writebehind,
    "workers": workers,
    "beat": beat,
    "database": database,
}


async def _run(check: Check, m: ManagementRuntime) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(check(m), m.config.check_timeout_s)
    except TimeoutError:
        return {"ok": False, "error": f"timed out after {m.config.check_timeout_s}s"}
    except Exception as exc:  # a check that fails to run is a failing check, never a 500
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


async def health(m: ManagementRuntime) -> dict[str, Any]:
    """``{"status": "ok" | "failing", "failing": [names], "checks": {name: {...}}}``."""
    started = time.perf_counter()
    results = await asyncio.gather(*(_run(check, m) for check in CHECKS.values()))
    checks = dict(zip(CHECKS, results, strict=True))
    failing = [name for name, result in checks.items() if not result["ok"]]
    return {
        "status": "failing" if failing else "ok",
        "failing": failing,
        "checks": checks,
        "took_ms": round((time.perf_counter() - started) * 1000, 1),
    }
