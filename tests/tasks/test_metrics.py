"""The metrics snapshot: every process's counters, Redis INFO and the key distribution, stored
as a PostgreSQL row with real figures, once a minute."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

from cache import CacheService, DataType, build_cache
from config import Settings, load_settings
from db import reports, session_factory
from tasks.keyspace import distribution, pattern_of
from tasks.metrics import INFO_FIELDS, take_snapshot
from tests.support.redis_procs import start_redis
from tests.workers.conftest import PG_MEMBERS, InProcess
from workers import routing
from workers.publisher import MetricsPublisher


def test_snapshot_merges_processes_and_reads_redis(cache: CacheService, settings: Settings) -> None:
    cache.set(cache.keys.lookup("tiers"), [1], DataType.LOOKUP)
    cache.get(cache.keys.lookup("tiers"), DataType.LOOKUP)
    cache.get(cache.keys.lookup("statuses"), DataType.LOOKUP)
    other = MetricsPublisher(cache, "api", process="api-elsewhere")
    assert other.publish()  # as if another process had published the same counters
    payload = take_snapshot(cache, MetricsPublisher(cache, "worker", process="me"))
    assert set(payload["processes"]) == {"me", "api-elsewhere"}
    lookups = payload["total"]["by_type"]["lookup"]
    assert (lookups["hits"], lookups["misses"], lookups["writes"]) == (2, 2, 2)
    assert lookups["hit_rate"] == 0.5
    redis = payload["redis"]
    assert redis["used_memory"] > 0 and redis["role"] == "master"
    assert {"keyspace_hits", "keyspace_misses", "evicted_keys", "run_id"} <= set(redis)
    assert set(redis) - {"replicas", "keyspace"} <= set(INFO_FIELDS)
    assert f"db{settings.redis_db}" in redis["keyspace"]
    assert payload["keyspace"]["patterns"]["lookup"]["sampled"] >= 1


def test_key_distribution_is_estimated_from_a_sample() -> None:
    with start_redis() as proc:
        settings = load_settings(
            _env_file=None, redis_host="127.0.0.1", redis_port=proc.port, redis_key_prefix="kd:"
        )
        cache = build_cache(settings)
        try:
            client = cache.clients.writer
            pipe = client.pipeline(transaction=False)
            for n in range(20_000):
                pipe.set(cache.keys.member(n), "x" * 100)
            for n in range(10_000):
                pipe.set(cache.keys.http(f"d{n}"), "y" * 1000)
            for n in range(2_000):
                pipe.set(f"foreign:{n}", "z")
            pipe.execute()
            sampled = distribution(cache, sample=3_000)
            exact = distribution(cache, sample=50_000)
        finally:
            cache.close()
    assert not sampled["complete"] and sampled["sampled"] == 3_000 and sampled["dbsize"] == 32_000
    members, http = sampled["patterns"]["member"], sampled["patterns"]["http"]
    assert 17_000 < members["keys"] < 23_000 and 8_000 < http["keys"] < 12_000
    assert http["avg_bytes"] > members["avg_bytes"] > 100
    assert members["glob"] == "kd:member:*"
    assert exact["complete"]
    assert {n: p["keys"] for n, p in exact["patterns"].items()} == {
        "member": 20_000,
        "http": 10_000,
        "other": 2_000,
    }


def test_pattern_of() -> None:
    assert pattern_of("p:", "p:member:1") == "member"
    assert pattern_of("p:", "p:lease:{p:member:1}") == "lease"
    assert pattern_of("p:", "celery-task-meta-1") == "other"
    assert pattern_of("p:", "p:oops") == "other"


def test_snapshot_task_stores_a_row_once_per_minute(worker: InProcess, pg_engine: Engine) -> None:
    """Warm every member, then snapshot twice in one minute: one row, holding the warm-up's
    writes as the worker counted them and the keys it left."""
    assert worker.wait(worker.client.enqueue_warmup("all")).state == "SUCCESS"
    minute = "2099-01-01T0000"
    first = worker.run(routing.METRICS_SNAPSHOT, minute)
    second = worker.run(routing.METRICS_SNAPSHOT, minute)
    assert first.state == second.state == "SUCCESS", (first.error, second.error)
    assert (first.result["ran"], second.result["ran"]) == (True, False)
    summary = first.result["result"]
    assert summary["processes"] == 1 and summary["used_memory"] > 0

    now = dt.datetime.now(dt.UTC)
    with session_factory(pg_engine)() as session:
        recent = list(
            reports.iter_snapshots(
                session, now - dt.timedelta(minutes=5), now + dt.timedelta(minutes=1)
            )
        )  # read to the end: the server-side cursor closes
    row = next(r for r in recent if r["id"] == summary["id"])  # taken just now
    payload = row["payload"]
    (process,) = payload["processes"].values()
    assert process["role"] == "worker"
    assert process["by_type"]["member"]["writes"] == PG_MEMBERS
    assert payload["total"]["by_type"]["member"]["writes"] == PG_MEMBERS
    assert payload["redis"]["used_memory"] > 0 and payload["redis"]["role"] == "master"
    patterns = payload["keyspace"]["patterns"]
    assert payload["keyspace"]["complete"] and patterns["member"]["keys"] == PG_MEMBERS
    assert patterns["member"]["bytes"] > 0
