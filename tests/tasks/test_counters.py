"""Counters across processes and over a window of snapshots (pure functions)."""

from __future__ import annotations

from typing import Any

from cache.metrics import rates
from tasks.counters import Window, compact, merge


def process(started: float, hits: int, misses: int, errors: int = 0, **life: Any) -> dict[str, Any]:
    counters = {"hits": hits, "misses": misses, "errors": errors}
    lifetimes = {"member": life} if life else {}
    return {"started_at": started, "by_type": {"member": counters}, "lifetimes": lifetimes}


def snap(
    at: str, processes: dict[str, Any], run_id: str = "r1", kh: int = 0, km: int = 0
) -> dict[str, Any]:
    redis = {"run_id": run_id, "keyspace_hits": kh, "keyspace_misses": km, "evicted_keys": 0}
    return {"taken_at": at, "payload": {"processes": processes, "redis": redis}}


def test_compact_and_merge_sum_the_processes() -> None:
    published = {
        "w1": {
            "role": "worker",
            "snapshot": {
                "started_at": 1.0,
                "by_type": {"member": {"hits": 3, "misses": 1, "load_seconds": {"count": 9}}},
                "breaker": {"state": "closed"},
            },
        },
        "api": {"role": "api", "snapshot": {"by_type": {"member": {"hits": 5, "misses": 1}}}},
    }
    compacted = {name: compact(doc) for name, doc in published.items()}
    assert "load_seconds" not in compacted["w1"]["by_type"]["member"]  # histograms dropped
    merged = merge(compacted)
    assert merged["processes"] == 2
    assert merged["by_type"]["member"]["hits"] == 8
    assert merged["total"]["hit_rate"] == 0.8 and merged["total"]["lookups"] == 10


def test_rates_of_nothing_are_none() -> None:
    assert rates({}) == {"lookups": 0, "hit_rate": None, "error_rate": None}


def test_window_counts_from_the_baseline_and_through_restarts() -> None:
    baseline = snap("t0", {"w1": process(1.0, 100, 50), "w2": process(1.0, 10, 0)}, kh=1000)
    rows = [
        snap("t1", {"w1": process(1.0, 160, 60), "w2": process(1.0, 30, 0)}, kh=1500, km=10),
        # w1 restarted (new started_at): counts from zero again; w2 died (last value kept);
        # w3 started inside the window; Redis restarted (new run_id).
        snap("t2", {"w1": process(2.0, 5, 5), "w3": process(2.0, 7, 3)}, "r2", kh=40, km=2),
    ]
    window = Window().fold(baseline, rows)
    member = window.by_type()["member"]
    # w1: 60 + 5 hits; w2: 20; w3: 7  |  misses: w1 10 + 5, w3 3
    assert (member["hits"], member["misses"]) == (92, 18)
    assert member["hit_rate"] == round(92 / 110, 6)
    redis = window.redis_increase()
    assert redis["keyspace_hits"] == 500 + 40 and redis["keyspace_misses"] == 10 + 2
    assert window.snapshots == 2 and window.last_taken_at == "t2"


def test_without_history_the_first_snapshot_is_the_baseline() -> None:
    rows = [snap("t1", {"w1": process(1.0, 100, 0)}), snap("t2", {"w1": process(1.0, 130, 10)})]
    total = Window().fold(None, rows).total()
    assert (total["hits"], total["misses"]) == (30, 10)


def test_lifetimes_over_the_window() -> None:
    base = snap("t0", {"w": process(1.0, 0, 0, invalidated=2, age_sum=20.0, buckets=[2, 0])})
    rows = [snap("t1", {"w": process(1.0, 0, 0, invalidated=5, age_sum=920.0, buckets=[2, 3])})]
    member = Window().fold(base, rows).lifetimes()["member"]
    assert member["invalidated"] == 3 and member["buckets"] == [0, 3]
    assert member["mean_age"] == 300.0
