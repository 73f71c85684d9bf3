"""Health, metrics, history, Prometheus text and reports, from real Redis and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api_stub.management import PREFIX
from cache import DataType, build_cache
from cache.kinds import KINDS
from config import Settings
from db import reports
from db.engine import make_engine
from tests.management.conftest import Mgmt, Tokens, serve, settings_for
from tests.support.redis_procs import RedisProcess
from workers.publisher import MetricsPublisher

pytestmark = pytest.mark.anyio
HEALTH = f"{PREFIX}/health"


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


async def test_health_names_the_failing_checks(mgmt: Mgmt) -> None:
    answer = await mgmt.call("GET", HEALTH, "viewer")
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "failing"
    assert {"workers", "beat"} <= set(body["failing"])  # nothing consumes this broker
    checks = body["checks"]
    assert checks["redis"]["nodes"]["master"]["ok"] is True
    assert checks["replication"]["role"] == "master"
    assert checks["memory"]["used_memory"] > 0
    assert checks["breaker"]["state"] == "closed"
    assert checks["writebehind"]["backlog"] == 0
    assert checks["workers"]["answered"] == []


async def test_health_is_200_when_every_check_passes(mgmt: Mgmt) -> None:
    async def pong(_timeout: float) -> list[str]:
        return ["worker@test"]

    mgmt.runtime.ping = pong
    lease = mgmt.runtime.cache.keys.system("beat", "leader")
    await mgmt.runtime.cache.clients.writer.set(lease, b"token", px=30_000)
    answer = await mgmt.call("GET", HEALTH, "viewer")
    assert answer.status_code == 200, answer.json()["failing"]
    assert answer.json()["checks"]["beat"]["leader_lease_ms"] > 0


async def test_beat_is_alive_while_its_snapshots_are_recent(mgmt: Mgmt, engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        reports.add_snapshot(session, dt.datetime.now(dt.UTC), {"total": {}})
    beat = (await mgmt.call("GET", HEALTH, "viewer")).json()["checks"]["beat"]
    assert beat["ok"] and beat["leader_lease_ms"] is None
    assert beat["last_snapshot_age_s"] < 60


async def test_health_without_redis_answers_503_in_bounded_time(
    prefix: str, database_url: str, broker: RedisProcess, tokens: Tokens
) -> None:
    settings: Settings = settings_for(prefix, database_url, broker.port, redis_port=1)
    async with serve(settings, tokens) as mgmt:
        started = time.monotonic()
        answer = await mgmt.call("GET", HEALTH, "viewer")
        assert time.monotonic() - started < 5
        assert answer.status_code == 503
        assert {"redis", "memory", "writebehind"} <= set(answer.json()["failing"])
        # The rest of the API keeps answering: metrics say Redis is down.
        metrics = (await mgmt.call("GET", f"{PREFIX}/metrics", "viewer")).json()
        assert metrics["redis"] == {"up": False}


async def test_metrics_count_hits_and_latency_cached_vs_uncached(
    mgmt: Mgmt, mgmt_settings: Settings
) -> None:
    for _ in range(2):
        answer = await mgmt.client.get("/api/v1/members/3")
        assert answer.status_code == 200
    publisher = MetricsPublisher(build_cache(mgmt_settings), "worker", process="worker-test-1")
    publisher.cache.metrics.by_type[next(iter(publisher.cache.metrics.by_type))].hits += 5
    assert publisher.publish()
    try:
        body = (await mgmt.call("GET", f"{PREFIX}/metrics", "viewer")).json()
    finally:
        publisher.cache.close()
    member = body["this_process"]["by_type"]["member"]
    assert member["hits"] == 1 and member["misses"] == 1 and member["hit_rate"] == 0.5
    requests = body["latency"]["requests"]
    assert requests["cached"]["count"] == 1 and requests["uncached"]["count"] == 1
    assert {"p50", "p95", "p99"} <= set(requests["cached"])
    assert body["processes"]["worker-test-1"]["role"] == "worker"
    assert body["overall"]["total"]["hits"] == 6
    assert body["redis"]["up"] is True and body["redis"]["used_memory"] > 0
    assert body["writebehind"]["available"] is True


async def test_prometheus_text_has_the_figures_and_leaves_no_global_state(mgmt: Mgmt) -> None:
    await mgmt.client.get("/api/v1/members/4")
    registered = set(REGISTRY._names_to_collectors)
    answer = await mgmt.call("GET", f"{PREFIX}/prometheus", "viewer")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    for name in (
        "membership_cache_lookups",
        "membership_cache_loads",
        "membership_cache_errors",
        "membership_cache_request_duration_seconds",
        "membership_cache_load_duration_seconds",
        "membership_cache_breaker_state",
        "membership_cache_redis_used_memory",
        "membership_cache_writebehind_backlog",
        "membership_cache_near_hits",
        "membership_cache_near_bytes",
    ):
        assert name in families, name
    misses = [
        s.value
        for s in families["membership_cache_lookups"].samples
        if s.labels["data_type"] == "member" and s.labels["outcome"] == "miss"
        and s.labels["role"] == "api"
    ]  # fmt: skip
    assert misses == [1.0]
    assert set(REGISTRY._names_to_collectors) == registered


async def test_metrics_history_pages_through_snapshots(mgmt: Mgmt, engine: Engine) -> None:
    base = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    with Session(engine) as session, session.begin():
        for minute in range(3):
            reports.add_snapshot(
                session, base + dt.timedelta(minutes=minute), {"total": {"minute": minute}}
            )
    params = {"since": base.isoformat(), "until": (base + dt.timedelta(hours=1)).isoformat()}
    body = (await mgmt.call("GET", f"{PREFIX}/metrics/history", "viewer", params=params)).json()
    assert [s["total"]["minute"] for s in body["snapshots"]] == [0, 1, 2]
    assert body["truncated"] is False
    limited = await mgmt.call(
        "GET", f"{PREFIX}/metrics/history", "viewer", params=params | {"limit": 2}
    )
    assert len(limited.json()["snapshots"]) == 2 and limited.json()["truncated"] is True
    for since in ("0001-01-01T00:00:00", "not a date"):
        answer = await mgmt.call(
            "GET",
            f"{PREFIX}/metrics/history",
            "viewer",
            params={"since": since, "until": "0001-01-01T00:00:00"},
        )
        assert answer.status_code in (200, 422)


async def test_reports_are_listed_by_job(mgmt: Mgmt, engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        reports.save_report(session, "daily_report", "2031-01-01", "ok", {"hit_rate": 0.9})
    body = (await mgmt.call("GET", f"{PREFIX}/reports", "viewer",
                            params={"job": "daily_report"})).json()  # fmt: skip
    assert body["reports"][0]["period"] == "2031-01-01"
    assert body["reports"][0]["payload"] == {"hit_rate": 0.9}
    unknown = await mgmt.call("GET", f"{PREFIX}/reports", "viewer", params={"job": "nope"})
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["loc"] == ["query", "job"]


async def test_kinds_lists_the_registry_with_ttls(mgmt: Mgmt) -> None:
    answer = await mgmt.call("GET", f"{PREFIX}/kinds", "viewer")
    assert answer.status_code == 200
    body = answer.json()
    assert [kind["name"] for kind in body["kinds"]] == list(KINDS.names)
    growth = next(kind for kind in body["kinds"] if kind["name"] == "growth")
    assert growth["data_type"] == "analytics" and growth["warm"] == "critical"
    assert growth["ttl"] == mgmt.runtime.settings.cache_analytics_ttl
    assert "import" in growth["invalidated_by"]
    assert body["data_types"] == [data_type.value for data_type in DataType]
