"""The maintenance job bodies as functions: the rules, on snapshots kept in memory."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from cache import CacheService
from config import load_settings
from tasks.jobs import audit, capacity, daily, ttl_review
from tasks.jobs.base import JobContext
from tasks.records import Fold, T

SETTINGS = load_settings(_env_file=None)
DAY = dt.datetime(2031, 3, 4, tzinfo=dt.UTC)  # the previous day of period 2031-03-05


class MemoryRecords:
    """Records in a list: what the jobs read back."""

    def __init__(self, snapshots: list[tuple[dt.datetime, dict[str, Any]]]) -> None:
        self.snapshots = sorted(snapshots, key=lambda s: s[0])

    def _row(self, when: dt.datetime, payload: dict[str, Any]) -> dict[str, Any]:
        return {"taken_at": when.isoformat(), "payload": payload}

    def fold_snapshots(self, start: dt.datetime, end: dt.datetime, fold: Fold[T]) -> T:
        before = [s for s in self.snapshots if s[0] < start]
        base = self._row(*before[-1]) if before else None
        rows: Iterator[dict[str, Any]] = (
            self._row(w, p) for w, p in self.snapshots if start <= w < end
        )
        return fold(base, rows)

    def memory_series(
        self, start: dt.datetime, end: dt.datetime
    ) -> list[tuple[dt.datetime, int, int]]:
        return [
            (w, p["redis"]["used_memory"], p["redis"]["maxmemory"])
            for w, p in self.snapshots
            if start <= w < end
        ]

    def latest_snapshot(self) -> dict[str, Any] | None:
        return self._row(*self.snapshots[-1]) if self.snapshots else None


def context(records: MemoryRecords, cadence: str, period: str) -> JobContext:
    return JobContext(
        None,  # type: ignore[arg-type]  # the reporting jobs never touch Redis
        records,  # type: ignore[arg-type]
        SETTINGS,
        cadence,  # type: ignore[arg-type]
        period,
        None,  # type: ignore[arg-type]
    )


def counters(hits: int, misses: int, errors: int = 0, writes: int = 0) -> dict[str, Any]:
    return {"hits": hits, "misses": misses, "errors": errors, "writes": writes}


def snapshot(member: dict[str, Any], used: int = 0, **life: Any) -> dict[str, Any]:
    process = {
        "started_at": 1.0,
        "by_type": {"member": member},
        "lifetimes": {"member": life} if life else {},
    }
    redis = {"run_id": "r", "keyspace_hits": 0, "keyspace_misses": 0, "evicted_keys": 0}
    return {
        "processes": {"w": process},
        "redis": redis | {"used_memory": used, "maxmemory": 0},
    }


def test_daily_report_is_ok_above_the_floor_and_alerts_below() -> None:
    good = MemoryRecords(
        [
            (DAY - dt.timedelta(minutes=1), snapshot(counters(0, 0))),
            (DAY + dt.timedelta(hours=12), snapshot(counters(900, 100))),
        ]
    )
    report = daily.run(context(good, "daily", "2031-03-05"))
    assert report.status == "ok" and report.payload["cache"]["hit_rate"] == 0.9
    assert report.payload["window"]["start"] == DAY.isoformat()

    bad = MemoryRecords(
        [
            (DAY + dt.timedelta(hours=1), snapshot(counters(0, 0))),
            (DAY + dt.timedelta(hours=2), snapshot(counters(500, 500, errors=50))),
        ]
    )
    report = daily.run(context(bad, "daily", "2031-03-05"))
    assert report.status == "alert"
    assert "hit rate 50.0% below 80%" in (report.alert or "")
    assert "error rate" in (report.alert or "")

    quiet = daily.run(context(MemoryRecords([]), "daily", "2031-03-05"))
    assert quiet.status == "no_data"


@pytest.mark.parametrize(
    ("evidence", "expected"),
    [
        (ttl_review.Evidence(900, 10, 0.1, 10, 0, None), 900),  # too quiet to judge
        (ttl_review.Evidence(3600, 10_000, 0.95, 1_000, 900, 300.0), 600),  # dies by invalidation
        (ttl_review.Evidence(900, 10_000, 0.5, 5_000, 10, None), 1800),  # expires before reuse
        (ttl_review.Evidence(86_400 * 5, 10_000, 0.5, 5_000, 0, None), 7 * 86_400),  # capped
        (ttl_review.Evidence(900, 10_000, 0.97, 5_000, 100, 600.0), 900),  # fits
    ],
)
def test_ttl_recommendations(evidence: ttl_review.Evidence, expected: int) -> None:
    recommended, reason = ttl_review.recommend(evidence)
    assert recommended == expected, reason


def test_ttl_review_recommends_per_data_type() -> None:
    week = dt.datetime(2031, 3, 3, tzinfo=dt.UTC)  # Monday of 2031-W10
    records = MemoryRecords(
        [
            (week, snapshot(counters(0, 0))),
            # member: low hit rate, rare invalidation -> lengthen CACHE_MEMBER_TTL
            (week + dt.timedelta(days=3), snapshot(counters(300, 700, writes=700))),
        ]
    )
    report = ttl_review.run(context(records, "weekly", "2031-W11"))
    member = report.payload["types"]["member"]
    assert (member["current_ttl"], member["recommended_ttl"]) == (900, 1800)
    assert member["setting"] == "CACHE_MEMBER_TTL"
    assert report.status == "alert" and "CACHE_MEMBER_TTL 900 -> 1800" in (report.alert or "")
    assert report.payload["types"]["lookup"]["recommended_ttl"] == SETTINGS.cache_lookup_ttl


def test_capacity_projects_days_to_maxmemory() -> None:
    start = dt.datetime(2031, 2, 1, tzinfo=dt.UTC)
    series = [
        (start + dt.timedelta(days=d), 100_000_000 + d * 10_000_000, 1_000_000_000)
        for d in range(20)
    ]
    memory, found = capacity.analyse(series)
    assert memory["trend_bytes_per_day"] == pytest.approx(10_000_000)
    assert memory["days_to_maxmemory"] == pytest.approx(71, abs=0.1)  # 710 MB left at 10 MB/day
    assert found == ["maxmemory reached in about 71 days at the current trend"]
    flat, found = capacity.analyse([(start, 5, 0), (start + dt.timedelta(days=1), 5, 0)])
    assert flat["days_to_maxmemory"] is None
    assert found == ["no maxmemory set: Redis grows until the host runs out of memory"]
    assert capacity.slope_per_day([(0.0, 1.0)]) is None


def test_audit_rules() -> None:
    assert audit.check_version("6.0.9")[0]["severity"] == "high"
    assert audit.check_version("7.0.15")[0]["severity"] == "low"
    assert audit.check_version("7.4.1")[0]["severity"] == "info"
    users = audit.parse_acl(
        [
            "user default on nopass ~* &* +@all",
            "user cache on #abc ~membership:* +@read +@write",
            "user admin on #def ~* &* +@all",
            "user old off nopass +@all",
        ]
    )
    found = audit.check_users(users, requirepass=None)
    assert [(f["check"], f["severity"]) for f in found] == [
        ("acl", "medium"),  # admin
        ("auth", "high"),  # default, nopass
        ("acl", "medium"),  # default, everything
    ]
    exposure = audit.check_exposure(
        {"protected-mode": "no", "bind": "0.0.0.0", "port": "6379", "tls-port": "0"}, False
    )
    assert {(f["check"], f["severity"]) for f in exposure} == {
        ("exposure", "medium"),
        ("exposure", "high"),
        ("tls", "medium"),
    }
    loopback = audit.check_exposure({"bind": "127.0.0.1 -::1", "port": "6379"}, True)
    assert [f["severity"] for f in loopback] == ["info"]


def test_audit_of_the_shared_development_redis(cache: CacheService) -> None:
    found = audit.audit(cache.clients.writer)
    checks = {f["check"] for f in found}
    assert {"version", "commands"} <= checks  # FLUSHALL and friends are open to the default user
