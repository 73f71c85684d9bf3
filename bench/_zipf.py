"""The database-load workload of bench.endpoints: Zipf(1.0) reads with 5% writes.

Ranks 1..members are drawn with Zipf(1.0) and mapped to member ids through a fixed
permutation; 5% of the requests PATCH the member, the rest GET it, on 50 connections (wrk, one
thread, the same seed for both runs). Queries are counted in pg_stat_database (bench._pg).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final

from bench._http import BenchError, Server, wrk, zipf_with_writes
from bench._pg import Seeded, reading_cost, settled
from cache import build_cache
from config import load_settings
from tasks.sources import SqlSource
from tasks.warming import warm_all_members

MEMBER_PATH: Final = "/api/v1/members/"
ZIPF_EXPONENT: Final = 1.0
ZIPF_WRITES: Final = 0.05


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fewer_pct(before: float, after: float) -> float:
    return (1 - after / before) * 100 if before else 0.0


def zipf_run(
    name: str,
    env: dict[str, str],
    db: Seeded,
    seconds: float,
    ready: str,
    warm: Callable[[], None] | None,
) -> dict[str, Any]:
    """One run on a server of its own, stopped before counting: its backends publish then."""
    if warm is not None:
        warm()
    cost = reading_cost(db.dsn)
    before = settled(db.dsn)
    with Server(name, "bench.endpoints:api_app", env, ready=ready) as server:
        _log(f"zipf: {name}")
        script = zipf_with_writes(
            MEMBER_PATH, db.members, exponent=ZIPF_EXPONENT, write_share=ZIPF_WRITES
        )
        result = wrk(server.base, script, connections=50, seconds=seconds, seed=7)
    counts = settled(db.dsn) - before - cost  # less the reading of `before`
    if result.errors:
        raise BenchError(f"zipf {name}: {result.errors} failed requests")
    # Requests still in flight when wrk stopped reach the database too: count them.
    per_k = 1000 / result.sent
    return {
        "requests": result.requests,
        "sent": result.sent,
        "writes_sent": result.writes,
        "rps": round(result.rps, 1),
        "read_transactions": counts.reads,
        "write_transactions": counts.writes,
        "queries_per_1k_requests": round(counts.transactions * per_k, 1),
        "reads_per_1k_requests": round(counts.reads * per_k, 1),
        "tuples_per_1k_requests": round(counts.tuples * per_k, 1),
    }


def zipf(env: dict[str, str], db: Seeded, seconds: float, ready: str) -> dict[str, Any]:
    """Without the cache, then with it, every member warmed first by the warm-up's code."""

    def warm_every_member() -> None:
        _log("zipf: warming every member (tasks.warming.warm_all_members)")
        settings = load_settings(**_settings_of(env), _env_file=None)
        cache, source = build_cache(settings), SqlSource.from_settings(settings)
        try:
            warm_all_members(cache, source)
        finally:
            cache.close()
            source.close()

    uncached_env = env | {"CACHE_ENABLED": "false"}
    without = zipf_run("zipf-uncached", uncached_env, db, seconds, ready, None)
    with_cache = zipf_run("zipf-cached", env, db, seconds, ready, warm_every_member)
    fewer = _fewer_pct(without["queries_per_1k_requests"], with_cache["queries_per_1k_requests"])
    fewer_reads = _fewer_pct(without["reads_per_1k_requests"], with_cache["reads_per_1k_requests"])
    # Writes must reach the database whatever the cache does; a write costs it what an
    # uncached read does (a pool pre-ping and one statement), so this is the best reachable.
    bound = (1 - with_cache["writes_sent"] / with_cache["sent"]) * 100
    return {
        "exponent": ZIPF_EXPONENT,
        "write_share": ZIPF_WRITES,
        "counted_by": "pg_stat_database xact_rollback (reads) + xact_commit (writes)",
        "uncached": without,
        "cached": with_cache,
        "queries_fewer_pct": round(fewer, 1),
        "read_queries_fewer_pct": round(fewer_reads, 1),
        "fewer_pct_bound_by_writes": round(bound, 1),
        "expected": "50-70% lower",
    }


def _settings_of(env: dict[str, str]) -> dict[str, Any]:
    return {
        "database_url": env["DATABASE_URL"],
        "redis_host": env["REDIS_HOST"],
        "redis_port": int(env["REDIS_PORT"]),
        "redis_db": int(env["REDIS_DB"]),
        "redis_key_prefix": env["REDIS_KEY_PREFIX"],
    }
