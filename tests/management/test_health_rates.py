"""The cache check of /health: hit and error rates judged against their settings, over the
cluster-wide metrics snapshots (every process's counters), on both sides of each boundary."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.orm import Session

from api_stub.management import PREFIX, ManagementConfig
from api_stub.management.health import judge_rates
from cache import DataType, build_cache
from config import Settings
from db import reports
from db.engine import make_engine
from tasks.metrics import take_snapshot
from tests.management.conftest import TEST_CONFIG, Mgmt, Tokens, serve, settings_for
from tests.support.postgres import throwaway_database
from tests.support.redis_procs import RedisProcess
from workers.publisher import MetricsPublisher

CONFIG = ManagementConfig(min_hit_rate=0.5, max_error_rate=0.05, min_lookups=100)


def counters(hits: int, misses: int, errors: int = 0, writes: int = 0) -> dict[str, float]:
    return {"hits": hits, "misses": misses, "errors": errors, "writes": writes}


@pytest.mark.parametrize(
    ("totals", "ok", "failing"),
    [
        (counters(50, 50), True, []),  # hit rate 0.5: at the floor
        (counters(499, 501), False, ["hit_rate"]),  # 0.499
        (counters(49, 50), True, []),  # 99 lookups: not judged
        (counters(0, 100), False, ["hit_rate"]),  # 100 lookups: judged
        (counters(95, 5, errors=5), True, []),  # errors 5 / 100 operations: at the bound
        (counters(95, 5, errors=6), False, ["error_rate"]),  # 6 / 100
        (counters(10, 90, errors=50), False, ["hit_rate", "error_rate"]),
        (counters(0, 0), True, []),  # no traffic
    ],
)
def test_judged_on_both_sides_of_each_boundary(
    totals: dict[str, float], ok: bool, failing: list[str]
) -> None:
    verdict = judge_rates(totals, CONFIG)
    assert (verdict["ok"], verdict["failing"]) == (ok, failing)


@pytest.fixture(scope="module")
def own_database() -> Iterator[str]:
    """A database of this module's own: its snapshots must not reach other tests' health."""
    with throwaway_database("health") as url:
        yield url


@pytest.fixture
async def cluster(
    prefix: str, own_database: str, broker: RedisProcess, tokens: Tokens
) -> AsyncIterator[tuple[Mgmt, Settings]]:
    settings = settings_for(prefix, own_database, broker.port)
    config = dataclasses.replace(TEST_CONFIG, min_lookups=100, min_hit_rate=0.5)
    async with serve(settings, tokens, config) as mgmt:
        yield mgmt, settings


def snapshot_of_a_worker(settings: Settings, hits: int, misses: int) -> None:
    """A worker process counts ``hits`` and ``misses`` (real reads of real keys), publishes
    them, and the metrics job's own code takes and stores a snapshot, before and after."""
    worker = build_cache(settings)
    engine = make_engine(settings.database_url)
    try:
        publisher = MetricsPublisher(worker, "worker")
        key = worker.keys.lookup("health-test")

        def store() -> None:
            payload = take_snapshot(worker, publisher, sample=10)
            with Session(engine) as session, session.begin():
                taken = dt.datetime.fromisoformat(payload["taken_at"])
                reports.add_snapshot(session, taken, payload)

        store()  # the baseline
        for _ in range(misses):
            worker.get(key, DataType.LOOKUP)
        assert worker.set(key, {"ok": True}, DataType.LOOKUP)
        for _ in range(hits):
            worker.get(key, DataType.LOOKUP)
        store()
        worker.delete(key)
    finally:
        engine.dispose()
        worker.close()


@pytest.mark.anyio
async def test_a_collapsed_hit_rate_across_processes_fails_health(
    cluster: tuple[Mgmt, Settings],
) -> None:
    mgmt, settings = cluster
    # This API process saw nothing; a worker missed 150 times and hit 50 times.
    snapshot_of_a_worker(settings, hits=50, misses=150)
    check = (await mgmt.call("GET", f"{PREFIX}/health", "viewer")).json()["checks"]["cache"]
    assert check["source"] == "snapshots"
    assert (check["lookups"], check["hit_rate"]) == (200, 0.25)
    assert check["ok"] is False and check["failing"] == ["hit_rate"]

    # The same worker recovers: over the window the hit rate is back above the floor.
    snapshot_of_a_worker(settings, hits=400, misses=0)
    check = (await mgmt.call("GET", f"{PREFIX}/health", "viewer")).json()["checks"]["cache"]
    assert check["lookups"] == 600 and check["hit_rate"] == 0.75
    assert check["ok"] is True
