"""Metrics snapshots and maintenance reports for the dashboard tests, with the figures the page
must show computed here from the same numbers.

Snapshots are one a minute for the last ``MINUTES`` minutes, shaped like the snapshot job's
(tasks/metrics.py): cumulative counters per data type summed by tasks.counters.merge, Redis
INFO figures, the key distribution, and the request latency per kind of an API process: its
requests recorded by the API's own LatencyRecorder, published as the API publishes them and
turned into each interval's quantiles by tasks.counters.latency_interval, the snapshot job's
function.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy.orm import Session

from api_stub.management.latency import LATENCY_BUCKETS, LatencyRecorder
from db import make_engine, reports
from tasks import counters

MINUTES: Final = 30
MIB: Final = 1024 * 1024
MAXMEMORY: Final = 64 * MIB
# Lookups per minute and the hit rate each type swings around.
TRAFFIC: Final = {"member": 1200, "analytics": 300, "statistics": 200, "lookup": 800}
HIT_RATE: Final = {"member": 0.92, "analytics": 0.78, "statistics": 0.64, "lookup": 0.985}
SWING: Final = {"member": 0.04, "analytics": 0.08, "statistics": 0.06, "lookup": 0.01}
KEYSPACE: Final = {  # pattern: (keys, average bytes)
    "member": (48_213, 612),
    "http": (5_120, 1_480),
    "analytics": (64, 9_200),
    "statistics": (32, 4_100),
    "lookup": (12, 2_300),
    "sys": (9, 96),
}
REPORTS: Final = (  # job, period, status, alert
    ("daily_report", "2025-11-24", "ok", None),
    ("daily_backup", "2025-11-24", "ok", None),
    (
        "weekly_ttl_review",
        "2025-W48",
        "alert",
        "member TTL 1800 s: 41% of entries are invalidated before they expire",
    ),
    (
        "monthly_capacity",
        "2025-11",
        "alert",
        "memory reaches maxmemory in 9 days at the current growth",
    ),
    ("quarterly_audit", "2025-Q4", "no_data", None),
)


# Request latency of the API, seconds per request: kind -> outcome -> (even minute, odd minute).
LATENCY: Final = {
    "lookup": {"cached": (0.0003, 0.0002), "uncached": (0.02, 0.04)},
    "growth": {"cached": (0.0008, 0.0007), "uncached": (0.07, 0.2)},
}
LATENCY_REQUESTS: Final = 40  # per kind and outcome, per minute


def bucket_of(seconds: float) -> float:
    """The upper bound of the latency bucket holding ``seconds``: what every quantile of a
    minute of identical requests is."""
    return next(bound for bound in LATENCY_BUCKETS if seconds <= bound)


@dataclass
class Seeded:
    """What was stored, and what the page must derive from it."""

    snapshots: list[dict[str, Any]] = field(default_factory=list)
    last_hit_rate: dict[str, float] = field(default_factory=dict)  # over the last interval
    last_error_rate: float = 0.0
    last_used_memory: int = 0
    last_latency: dict[str, float] = field(default_factory=dict)  # "<kind> <outcome>": p95


def _served(row: dict[str, int]) -> int:
    return row["hits"] + row["stale"] + row["negative_hits"]


def build(now: dt.datetime) -> Seeded:
    seeded = Seeded()
    running = {name: dict.fromkeys(counters.COUNTERS, 0) for name in TRAFFIC}
    recorder = LatencyRecorder()
    recorder.started_at = (now - dt.timedelta(minutes=MINUTES)).timestamp()
    previous: dict[str, Any] | None = None  # the last snapshot: the latency's baseline
    for minute in range(MINUTES):
        for kind, outcomes in LATENCY.items():
            for outcome, values in outcomes.items():
                for _ in range(LATENCY_REQUESTS):
                    recorder.observe(kind, outcome, values[minute % 2])
        for name, lookups in TRAFFIC.items():
            rate = HIT_RATE[name] + SWING[name] * math.sin(minute / 4)
            hits = round(lookups * rate)
            row = running[name]
            row["hits"] += hits
            row["misses"] += lookups - hits
            row["loads"] += lookups - hits
            row["writes"] += lookups - hits
            row["errors"] += 9 if name == "member" and minute % 7 == 3 else 1
        by_type = {name: dict(row) for name, row in running.items()}
        processes = {
            "worker-1": {"role": "worker", "by_type": by_type, "breaker": "closed"},
            "api-1": counters.compact({"role": "api", "latency": recorder.document()}),
        }
        taken_at = (now - dt.timedelta(minutes=MINUTES - 1 - minute)).isoformat()
        used = 40 * MIB + minute * 3 * MIB // 10
        patterns = {
            name: {"glob": f"p:{name}:*", "keys": keys, "bytes": keys * size, "sampled": keys}
            for name, (keys, size) in KEYSPACE.items()
        }
        payload = {
            "taken_at": taken_at,
            "processes": processes,
            "total": counters.merge(processes),
            "latency": counters.latency_interval(previous, processes),
            "redis": {
                "used_memory": used,
                "maxmemory": MAXMEMORY,
                "maxmemory_policy": "allkeys-lru",
            },
            "keyspace": {
                "dbsize": sum(keys for keys, _ in KEYSPACE.values()),
                "sampled": 5_000,
                "complete": False,
                "patterns": patterns,
            },
        }
        seeded.snapshots.append(payload)
        previous = payload
    before = seeded.snapshots[-2]["total"]
    after = seeded.snapshots[-1]["total"]
    for name in TRAFFIC:
        old, new = before["by_type"][name], after["by_type"][name]
        lookups = (_served(new) + new["misses"]) - (_served(old) + old["misses"])
        seeded.last_hit_rate[name] = (_served(new) - _served(old)) / lookups
    old, new = before["total"], after["total"]
    operations = sum(new[c] - old[c] for c in ("hits", "misses", "writes", "loads"))
    errors = (new["errors"] + new["load_errors"]) - (old["errors"] + old["load_errors"])
    seeded.last_error_rate = errors / operations
    seeded.last_used_memory = seeded.snapshots[-1]["redis"]["used_memory"]
    seeded.last_latency = {
        f"{kind} {outcome}": bucket_of(values[(MINUTES - 1) % 2])
        for kind, outcomes in LATENCY.items()
        for outcome, values in outcomes.items()
    }
    return seeded


def store(database_url: str, now: dt.datetime) -> Seeded:
    """Write the snapshots and reports into the database; what was written."""
    seeded = build(now)
    engine = make_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            for payload in seeded.snapshots:
                reports.add_snapshot(
                    session, dt.datetime.fromisoformat(payload["taken_at"]), payload
                )
            for job, period, status, alert in REPORTS:
                reports.save_report(session, job, period, status, {"seeded": True}, alert)
    finally:
        engine.dispose()
    return seeded
