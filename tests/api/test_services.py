"""The API process holds one services object: one cache core (breaker, outbox, metrics) under
the async front, the sync front and the management API, and one write-behind buffer."""

from __future__ import annotations

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine, event, text

from api_stub.runtime import Running
from cache.breaker import BreakerState
from cache.flow import UNAVAILABLE
from config import Settings
from tests.api.conftest import CURRENT, Api, serve
from tests.support.redis_procs import free_port

pytestmark = pytest.mark.anyio


def _running(api: Api) -> Running:
    running = api.app.state.running
    assert isinstance(running, Running)
    return running


async def test_one_core_under_every_front_of_the_process(api: Api) -> None:
    running = _running(api)
    services = running.services
    management = api.app.state.management.runtime
    assert management is not None and management.services is services
    fronts = [running.cache, services.cache, management.cache, management.sync_cache]
    fronts.append(management.limiter.cache)
    assert running.cache is services.async_cache is management.cache
    assert services.cache is management.sync_cache and services.cache is not running.cache
    assert {id(front.core) for front in fronts} == {id(services.core)}
    assert {id(front.breaker) for front in fronts} == {id(services.core.breaker)}
    assert {id(front.core.outbox) for front in fronts} == {id(services.core.outbox)}
    assert {id(front.metrics) for front in fronts} == {id(services.core.metrics)}
    assert management.db is running.db and running.db.engine is services.engine
    # The management runtime is kept for the run: what a test or a route sets on it stays.
    assert api.app.state.management.runtime is management


async def test_a_breaker_opened_through_the_sync_front_keeps_requests_off_redis(
    api: Api, redis_client: redis.Redis
) -> None:
    running = _running(api)
    services = running.services
    path = "/api/v1/lookups/tiers"
    assert (await api.client.get(path)).headers["x-cache"] == "MISS"
    assert (await api.client.get(path)).headers["x-cache"] == "HIT"

    dead = redis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))
    try:
        for _ in range(services.settings.cache_breaker_failures):
            assert services.cache.run(dead.ping) is UNAVAILABLE  # the threadpool's front
    finally:
        dead.close()
    assert running.cache.breaker.state is BreakerState.OPEN
    assert api.app.state.management.runtime.cache.breaker.state is BreakerState.OPEN

    skipped = running.cache.metrics.breaker_skips
    api.statements.clear()
    if services.core.near is not None:  # the near tier needs no Redis request: not this test's
        services.core.near.flush()
    answer = await api.client.get(path)  # cached in Redis, but the async front does not ask
    assert (answer.status_code, answer.headers["x-cache"]) == (200, "MISS")
    assert api.statements, "served from the database"
    assert running.cache.metrics.breaker_skips > skipped
    assert redis_client.exists(services.keys.lookup("tiers")) == 1


async def test_one_write_behind_buffer_behind_the_activity_routes_and_management(
    api: Api, engine: Engine
) -> None:
    running = _running(api)
    services = running.services
    management = api.app.state.management.runtime
    assert services.recorder is not None
    assert management.writebehind is services.writebehind is services.recorder.wb
    assert services.writebehind.client is services.redis("durable")

    with engine.connect() as conn:
        member_id = conn.execute(text("SELECT max(id) FROM members")).scalar_one()
    before = services.writebehind.health().backlog
    posted = await api.client.post(
        f"/api/v1/members/{member_id}/activity", json={"kind": "checkin", "times": 2}
    )
    assert posted.status_code == 202
    # Recorded through the process's recorder: the process's buffer sees it.
    assert services.writebehind.health().backlog == before + 1
    assert services.writebehind.activity(member_id)["days"][0]["checkin"] >= 2


async def test_each_run_of_the_app_opens_and_closes_its_own_services(
    api_settings: Settings,
) -> None:
    async with serve(api_settings) as first:
        one = _running(first).services
    assert one.closed and first.app.state.running is None
    assert first.app.state.management.runtime is None
    async with serve(api_settings) as second:
        two = _running(second).services
        assert two is not one and not two.closed
        assert second.app.state.management.runtime.services is two


async def test_the_pool_is_open_before_the_first_request(api: Api) -> None:
    """The first readers find their database connections open: none waits for one."""
    pool = _running(api).db.engine.pool
    opened: list[int] = []
    event.listen(pool, "connect", lambda *_: opened.append(1))
    assert pool.checkedin() == pool.size() > 0  # type: ignore[attr-defined]
    answer = await api.client.get("/api/v1/members?tier=gold", headers=CURRENT)
    assert answer.status_code == 200
    assert opened == [], "a request opened a connection"
