"""The once-per-period guard of scheduled jobs, on the real Redis (no worker needed)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from cache import CacheService
from workers.periods import (
    RECORD_SECONDS,
    PeriodGuard,
    bounds,
    check_period,
    period_of,
    previous,
)


@pytest.fixture
def guard(cache: CacheService) -> PeriodGuard:
    return PeriodGuard(cache.clients.writer, cache.keys, lease_seconds=30)


WHEN = dt.datetime(2025, 12, 31, 23, 59, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("cadence", "expected"),
    [
        ("minute", "2025-12-31T2359"),
        ("daily", "2025-12-31"),
        ("weekly", "2026-W01"),  # ISO week: 31 Dec 2025 is a Wednesday of week 1 of 2026
        ("monthly", "2025-12"),
        ("quarterly", "2025-Q4"),
    ],
)
def test_period_ids(cadence: str, expected: str) -> None:
    assert period_of(cadence, WHEN) == expected  # type: ignore[arg-type]
    assert check_period(cadence, expected) == expected  # type: ignore[arg-type]


def test_period_of_converts_to_utc() -> None:
    paris_new_year = dt.datetime(2026, 1, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert period_of("daily", paris_new_year) == "2025-12-31"


@pytest.mark.parametrize("bad", ["2025-12-31:00", "2025-13", "*", "2025-Q5", ""])
def test_malformed_periods_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        check_period("monthly" if bad == "2025-13" else "daily", bad)
    with pytest.raises(ValueError):
        check_period("quarterly", bad)


def test_second_run_for_the_same_period_is_a_no_op(guard: PeriodGuard) -> None:
    runs: list[str] = []
    first = guard.run_once("job", "daily", "2099-01-01", "t1", lambda: runs.append("a") or 1)
    second = guard.run_once("job", "daily", "2099-01-01", "t2", lambda: runs.append("b") or 2)
    assert runs == ["a"]
    assert (first.ran, first.result) == (True, 1)
    assert second.ran is False
    assert second.record is not None
    assert second.record["state"] == "done" and second.record["token"] == "t1"
    # The record lives two periods, then goes: nothing piles up.
    ttl = guard.client.ttl(guard.key("job", "2099-01-01"))
    assert 0 < ttl <= RECORD_SECONDS["daily"]
    # Another period, or another job, runs.
    assert guard.run_once("job", "daily", "2099-01-02", "t3", lambda: runs.append("c")).ran
    assert guard.run_once("other", "daily", "2099-01-01", "t4", lambda: runs.append("d")).ran
    assert runs == ["a", "c", "d"]


def test_concurrent_duplicates_run_once(guard: PeriodGuard) -> None:
    runs: list[int] = []
    barrier = threading.Barrier(8)

    def tick(n: int) -> None:
        barrier.wait()
        guard.run_once(
            "job", "weekly", "2099-W01", f"t{n}", lambda: runs.append(n) or time.sleep(0.05)
        )

    threads = [threading.Thread(target=tick, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(runs) == 1


def test_running_claim_blocks_a_duplicate(guard: PeriodGuard) -> None:
    seen = []

    def body() -> str:
        # While the first run is in progress, a duplicate sees the "running" claim.
        seen.append(guard.run_once("job", "daily", "2099-01-01", "t2", lambda: "dup"))
        return "first"

    outcome = guard.run_once("job", "daily", "2099-01-01", "t1", body)
    assert outcome.result == "first"
    assert seen[0].ran is False and seen[0].record["state"] == "running"  # type: ignore[index]


def test_a_failed_run_releases_the_period(guard: PeriodGuard) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        guard.run_once("job", "monthly", "2099-01", "t1", broken)
    assert not guard.client.exists(guard.key("job", "2099-01"))
    assert guard.run_once("job", "monthly", "2099-01", "t2", lambda: "ok").result == "ok"


def test_a_late_run_cannot_overwrite_a_claim_it_lost(guard: PeriodGuard) -> None:
    """The lease of t1 expired mid-run and t2 took the period: t1's finish changes nothing."""
    key = guard.key("job", "2099-Q1")

    def slow_and_overtaken() -> str:
        guard.client.delete(key)  # as if the lease expired
        assert guard.run_once("job", "quarterly", "2099-Q1", "t2", lambda: "second").ran
        return "first"

    guard.run_once("job", "quarterly", "2099-Q1", "t1", slow_and_overtaken)
    # What a later duplicate is shown: t2's record, untouched by t1's finish.
    record = guard.run_once("job", "quarterly", "2099-Q1", "t3", lambda: "third").record
    assert record is not None and record["token"] == "t2" and record["result"] == "second"


def test_default_period_is_now(guard: PeriodGuard) -> None:
    outcome = guard.run_once("job", "daily", None, "t1", lambda: None)
    assert outcome.period == period_of("daily", dt.datetime.now(dt.UTC))


@pytest.mark.parametrize(
    ("cadence", "period", "start", "end", "before"),
    [
        ("minute", "2025-12-31T2359", "2025-12-31T23:59", "2026-01-01T00:00", "2025-12-31T2358"),
        ("daily", "2026-03-01", "2026-03-01T00:00", "2026-03-02T00:00", "2026-02-28"),
        ("weekly", "2026-W01", "2025-12-29T00:00", "2026-01-05T00:00", "2025-W52"),
        ("monthly", "2025-12", "2025-12-01T00:00", "2026-01-01T00:00", "2025-11"),
        ("quarterly", "2026-Q1", "2026-01-01T00:00", "2026-04-01T00:00", "2025-Q4"),
    ],
)
def test_bounds_and_previous(cadence: str, period: str, start: str, end: str, before: str) -> None:
    lo, hi = bounds(cadence, period)  # type: ignore[arg-type]
    utc = dt.UTC
    assert (lo, hi) == (
        dt.datetime.fromisoformat(start).replace(tzinfo=utc),
        dt.datetime.fromisoformat(end).replace(tzinfo=utc),
    )
    assert period_of(cadence, lo) == period == period_of(cadence, hi - dt.timedelta(seconds=1))  # type: ignore[arg-type]
    assert previous(cadence, period) == before  # type: ignore[arg-type]
