"""The metrics snapshot: real figures from this process and from Redis INFO, once a minute."""

from __future__ import annotations

import pytest

from cache import CacheService, DataType
from tasks.metrics import INFO_FIELDS, take_snapshot
from tests.workers import harness
from workers import routing


def test_snapshot_has_counters_and_redis_info(unit_cache: CacheService) -> None:
    unit_cache.set(unit_cache.keys.lookup("tiers"), [1], DataType.LOOKUP)
    unit_cache.get(unit_cache.keys.lookup("tiers"), DataType.LOOKUP)
    unit_cache.get(unit_cache.keys.lookup("statuses"), DataType.LOOKUP)
    snapshot = take_snapshot(unit_cache)
    lookups = snapshot["cache"]["by_type"]["lookup"]
    assert (lookups["hits"], lookups["misses"], lookups["writes"]) == (1, 1, 1)
    assert snapshot["redis"]["used_memory"] > 0
    assert snapshot["redis"]["role"] == "master"
    assert set(snapshot["redis"]) <= set(INFO_FIELDS)
    assert {"keyspace_hits", "keyspace_misses", "evicted_keys"} <= set(snapshot["redis"])


@pytest.mark.slow
def test_snapshot_task_runs_once_per_minute(clean_stack: harness.Stack) -> None:
    stack = clean_stack
    minute = "2099-01-01T0000"
    first = stack.wait(
        stack.client.app.send_task(
            routing.METRICS_SNAPSHOT.name, args=[minute], queue=routing.Q_METRICS
        ).id
    )
    second = stack.wait(
        stack.client.app.send_task(
            routing.METRICS_SNAPSHOT.name, args=[minute], queue=routing.Q_METRICS
        ).id
    )
    assert first.state == second.state == "SUCCESS"
    assert (first.result["ran"], second.result["ran"]) == (True, False)
    taken = first.result["result"]["snapshot"]
    assert taken["redis"]["used_memory"] > 0
    assert "by_type" in taken["cache"] and taken["process"]["pid"] > 0
    assert first.result["result"]["stored"] is False  # the PostgreSQL seam is not wired yet
