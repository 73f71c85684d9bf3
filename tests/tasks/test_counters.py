"""Counters across processes and over a window of snapshots (pure functions)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from api_stub.management.latency import CACHED, UNCACHED, LatencyRecorder
from cache.metrics import rates
from tasks.counters import Window, compact, latency_interval, merge


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


# --- request latency per kind ------------------------------------------------------------------
def published(recorder: LatencyRecorder) -> dict[str, Any]:
    """A process's compacted document, as the snapshot keeps it, with the recorder's latency."""
    return compact({"role": "api", "snapshot": {"started_at": 0.0}, "latency": recorder.document()})


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def observe(recorder: LatencyRecorder, kind: str, outcome: str, seconds: float, n: int) -> None:
    for _ in range(n):
        recorder.observe(kind, outcome, seconds)


def test_latency_of_the_interval_merges_processes_per_kind_and_outcome() -> None:
    a, b = LatencyRecorder(), LatencyRecorder()
    a.started_at = b.started_at = 1_000.0
    observe(a, "member", CACHED, 0.0002, 50)  # before the previous snapshot: not in the interval
    previous = {"taken_at": iso(2_000.0), "processes": {"a": published(a), "b": published(b)}}
    observe(a, "member", CACHED, 0.0003, 90)  # bucket <= 0.0005
    observe(b, "member", CACHED, 0.003, 10)  # bucket <= 0.005
    observe(a, "member", UNCACHED, 0.02, 19)  # bucket <= 0.025
    observe(b, "member", UNCACHED, 3.0, 1)  # above the largest bound
    observe(b, "growth", UNCACHED, 0.07, 4)  # bucket <= 0.1
    interval = latency_interval(previous, {"a": published(a), "b": published(b)})
    assert interval["since"] == iso(2_000.0) and interval["processes"] == 2
    assert set(interval["kinds"]) == {"member", "growth"}
    cached = interval["kinds"]["member"][CACHED]
    assert cached["count"] == 100 and cached["sum"] == pytest.approx(90 * 0.0003 + 10 * 0.003)
    assert (cached["p50"], cached["p95"], cached["p99"]) == (0.0005, 0.005, 0.005)
    uncached = interval["kinds"]["member"][UNCACHED]
    assert uncached["count"] == 20
    assert (uncached["p50"], uncached["p95"], uncached["p99"]) == (0.025, 0.025, None)
    assert interval["kinds"]["growth"] == {
        UNCACHED: {
            "count": 4,
            "sum": pytest.approx(0.28),
            "buckets": [0] * 9 + [4] + [0] * 5,
            "p50": 0.1,
            "p95": 0.1,
            "p99": 0.1,
        }
    }


def test_latency_through_a_restart_is_never_negative_nor_mixed() -> None:
    old = LatencyRecorder()
    old.started_at = 1_000.0
    observe(old, "lookup", CACHED, 0.0004, 500)
    previous = {"taken_at": iso(2_000.0), "processes": {"api-1": published(old)}}
    # The process restarted (a new recorder run under the same process id) after the previous
    # snapshot: its few new requests count from zero, not as 500 fewer.
    new = LatencyRecorder()
    new.started_at = 2_010.0
    observe(new, "lookup", CACHED, 0.004, 3)
    # Another process was running before the previous snapshot but missing from it: no
    # baseline, so its whole past is kept out of this interval.
    unseen = LatencyRecorder()
    unseen.started_at = 1_500.0
    observe(unseen, "lookup", CACHED, 0.04, 1000)
    now = {"api-1": published(new), "api-2": published(unseen)}
    interval = latency_interval(previous, now)
    assert interval["processes"] == 1
    lookup = interval["kinds"]["lookup"][CACHED]
    assert lookup["count"] == 3 and min(lookup["buckets"]) == 0
    assert lookup["p50"] == lookup["p99"] == 0.005
    # The next interval has both baselines.
    observe(unseen, "lookup", UNCACHED, 0.04, 2)
    later = latency_interval(
        {"taken_at": iso(2_060.0), "processes": now},
        {"api-1": published(new), "api-2": published(unseen)},
    )
    assert later["processes"] == 2
    assert later["kinds"] == {
        "lookup": {
            UNCACHED: {
                "count": 2,
                "sum": pytest.approx(0.08),
                "buckets": [0] * 8 + [2] + [0] * 6,
                "p50": 0.05,
                "p95": 0.05,
                "p99": 0.05,
            }
        }
    }


def test_latency_without_a_previous_snapshot_counts_since_each_start() -> None:
    recorder = LatencyRecorder()
    observe(recorder, "dashboard", UNCACHED, 0.2, 2)
    interval = latency_interval(None, {"api": published(recorder)})
    assert interval["since"] is None
    assert interval["kinds"]["dashboard"][UNCACHED]["count"] == 2
    assert latency_interval(None, {"w": compact({"role": "worker"})})["kinds"] == {}
