"""Latency history: a real API serves cached and uncached requests to two routes, publishes
its latency per kind, the snapshot job's own code stores the interval, and /metrics/history
serves p50/p95/p99 per kind, cached vs uncached, through a restart of the API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from sqlalchemy import Engine

from api_stub import routes
from api_stub.management import PREFIX
from api_stub.management.latency import CACHED, LATENCY_BUCKETS, OUTCOMES, UNCACHED
from cache import CacheService, build_cache
from config import Settings
from db.engine import make_engine
from tasks.metrics import store_snapshot
from tasks.records import SqlRecords
from tests.management.conftest import Mgmt, Tokens, serve, settings_for
from tests.support.postgres import throwaway_database
from tests.support.redis_procs import RedisProcess
from workers.publisher import read_published

pytestmark = pytest.mark.anyio
QUANTILES = ("p50", "p95", "p99")


@pytest.fixture(scope="module")
def own_database() -> Iterator[str]:
    """This module's own database: the latest snapshot is the one these tests stored."""
    with throwaway_database("latency", members=10) as url:
        yield url


@pytest.fixture
def engine(own_database: str) -> Iterator[Engine]:
    engine = make_engine(own_database)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(prefix: str, own_database: str, broker: RedisProcess) -> Settings:
    return settings_for(prefix, own_database, broker.port)


@pytest.fixture
def worker_cache(settings: Settings) -> Iterator[CacheService]:
    """The snapshot job's cache front, in a process of its own (as a worker's would be).

    A loaded machine can stall a reply past the default 0.25 s socket timeout, and a snapshot
    that cannot read the published documents stores none: wait longer here."""
    cache = build_cache(settings.model_copy(update={"redis_socket_timeout": 5.0}))
    yield cache
    cache.close()


def publish(mgmt: Mgmt) -> None:
    """The API's own publisher, now rather than at its next interval."""
    publisher = mgmt.app.state.running.publisher
    assert publisher is not None and publisher.publish()


async def get(mgmt: Mgmt, path: str, times: int) -> list[str]:
    outcomes = []
    for _ in range(times):
        answer = await mgmt.client.get(f"{routes.PREFIX}{path}")
        assert answer.status_code == 200
        outcomes.append(answer.headers["x-cache"])
    return outcomes


async def served_count(mgmt: Mgmt, kind: str, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        live = mgmt.app.state.management.latency.by_kind_snapshot().get(kind) or {}
        if sum(int((live.get(o) or {}).get("count", 0)) for o in OUTCOMES) >= count:
            return
        assert time.monotonic() < deadline, f"{count} {kind} requests not recorded: {live}"
        await anyio.sleep(0.02)


async def history(mgmt: Mgmt) -> list[dict[str, Any]]:
    answer = await mgmt.call("GET", f"{PREFIX}/metrics/history", "viewer")
    assert answer.status_code == 200
    rows: list[dict[str, Any]] = answer.json()["snapshots"]
    return rows


async def test_latency_per_kind_is_published_stored_and_served_through_a_restart(
    settings: Settings, tokens: Tokens, engine: Engine, worker_cache: CacheService
) -> None:
    records = SqlRecords(engine)
    # The first run stops before the second starts, as a restart does: two live runs of one
    # process name would overwrite each other's publication.
    async with serve(settings, tokens) as api:
        store_snapshot(records, worker_cache, sample=10)  # the baseline: nothing served yet

        # Two routes (kinds member and lookup), each a miss then hits.
        assert await get(api, "/members/3", 4) == ["MISS", "HIT", "HIT", "HIT"]
        assert await get(api, "/lookups/tiers", 3) == ["MISS", "HIT", "HIT"]
        publish(api)

        # The published document carries the latency per kind, as this process recorded it.
        documents = read_published(worker_cache)
        mine = documents[api.runtime.process]
        assert mine["role"] == "api"
        kinds = mine["latency"]["kinds"]
        assert set(kinds) == {"member", "lookup"}
        assert [sum(kinds["member"][o]["counts"]) for o in OUTCOMES] == [3, 1]
        assert [sum(kinds["lookup"][o]["counts"]) for o in OUTCOMES] == [2, 1]

        # GET /metrics: this process live, and not a second time from its own publication.
        metrics = (await api.call("GET", f"{PREFIX}/metrics", "viewer")).json()
        assert metrics["this_process"]["process"] == api.runtime.process
        assert api.runtime.process not in metrics["processes"]
        assert metrics["overall"]["total"]["hits"] == metrics["this_process"]["total"]["hits"] == 5
        live = metrics["latency"]["by_kind"]
        assert live["member"][CACHED]["count"] == 3 and live["lookup"][UNCACHED]["count"] == 1
        assert metrics["latency"]["requests"][CACHED]["count"] == 5

        summary = store_snapshot(records, worker_cache, sample=10)
        rows = await history(api)
        assert rows[-1]["id"] == summary["id"]
        latency = rows[-1]["latency"]
        assert latency["since"] == rows[-2]["taken_at"] and latency["processes"] == 1
        served = latency["kinds"]
        assert set(served) == {"member", "lookup"}
        for kind, counts in {"member": (3, 1), "lookup": (2, 1)}.items():
            for outcome, count in zip(OUTCOMES, counts, strict=True):
                figures = served[kind][outcome]
                assert figures["count"] == count
                # The interval is everything this process served: its quantiles are the live ones,
                # each the upper bound of a bucket.
                for q in QUANTILES:
                    assert figures[q] == live[kind][outcome][q], (kind, outcome, q)
                    assert figures[q] in LATENCY_BUCKETS
                assert figures["p50"] <= figures["p95"] <= figures["p99"]
        # A hit is answered from Redis without running the route: never slower than its miss.
        assert served["member"][CACHED]["p50"] <= served["member"][UNCACHED]["p50"]

    # The API restarts: the same process id, a new run whose counts begin again at zero.
    async with serve(settings, tokens) as restarted:
        assert await get(restarted, "/lookups/tiers", 2) == ["HIT", "HIT"]
        # The recorder counts a request once its last byte is sent, which may be after the
        # client has the answer: publish once both are counted.
        await served_count(restarted, "lookup", 2)
        publish(restarted)
        store_snapshot(records, worker_cache, sample=10)
        rows = await history(restarted)
    after = rows[-1]["latency"]
    assert after["processes"] == 1, (after, rows[-2]["taken_at"], rows[-1]["taken_at"])
    assert list(after["kinds"]) == ["lookup"]  # nothing of the first run's member requests
    lookup = after["kinds"]["lookup"]
    assert set(lookup) == {CACHED} and lookup[CACHED]["count"] == 2
    assert min(lookup[CACHED]["buckets"]) == 0 and sum(lookup[CACHED]["buckets"]) == 2
    assert all(lookup[CACHED][q] in LATENCY_BUCKETS for q in QUANTILES)


async def test_an_api_publishes_from_its_start_to_its_stop(
    settings: Settings, tokens: Tokens, worker_cache: CacheService
) -> None:
    async with serve(settings, tokens) as mgmt:
        name = mgmt.runtime.process
        deadline = time.monotonic() + 5
        while name not in read_published(worker_cache):  # published at start-up, by its thread
            assert time.monotonic() < deadline, "the API did not publish at start-up"
            await anyio.sleep(0.02)
        await get(mgmt, "/members/4", 2)
    # Stopping publishes the final counters: what it served is not lost to the interval.
    final = read_published(worker_cache)[name]
    assert [sum(final["latency"]["kinds"]["member"][o]["counts"]) for o in OUTCOMES] == [1, 1]
    assert final["snapshot"]["by_type"]["member"]["hits"] == 1
