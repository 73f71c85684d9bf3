"""services.Services: one core under every front, clients per role, one engine, closed once."""

from __future__ import annotations

import datetime as dt
import os

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import text

from cache import MISS, CacheCore, CacheRegion, DataType, build_async_cache, build_cache
from cache.breaker import BreakerState
from cache.flow import UNAVAILABLE
from cache.writebehind import ActivityEvent
from config import Settings
from config.redis_role import RedisRole
from services import ROLES, Services
from tests.support.redis_procs import free_port, start_redis


def test_a_sync_process_has_one_front_and_no_async_parts(settings: Settings) -> None:
    with Services.open(settings) as services:
        assert services.cache.core is services.core
        assert services.keys is services.core.keys
        assert services.cache.set(services.keys.member(1), {"id": 1}, DataType.MEMBER)
        assert services.cache.get(services.keys.member(1), DataType.MEMBER) == {"id": 1}
        with pytest.raises(RuntimeError, match="asyncio=True"):
            _ = services.async_cache
        with pytest.raises(RuntimeError, match="asyncio=True"):
            services.async_redis("durable")
        with pytest.raises(RuntimeError, match="tasks=True"):
            _ = services.tasks
        assert services.recorder is None


def test_every_role_and_the_buffer_use_the_fronts_clients(settings: Settings) -> None:
    with Services.open(settings) as services:
        writer = services.cache.clients.writer
        assert all(services.redis(role) is writer for role in ROLES)
        assert services.writebehind.client is writer
        assert services.writebehind.keys is services.keys


@pytest.mark.anyio
async def test_both_fronts_share_one_breaker_outbox_and_metrics(settings: Settings) -> None:
    services = Services.open(settings, asyncio=True)
    try:
        sync, aio = services.cache, services.async_cache
        assert sync is not aio
        assert sync.core is aio.core is services.core
        assert sync.breaker is aio.breaker and sync.metrics is aio.metrics
        assert services.recorder is not None and services.recorder.wb is services.writebehind
        assert all(services.async_redis(role) is aio.clients.writer for role in ROLES)

        # A value written through the async front is there for the sync one.
        key = services.keys.member(7)
        assert await aio.set(key, {"id": 7}, DataType.MEMBER)
        assert sync.get(key, DataType.MEMBER) == {"id": 7}

        # Failures seen through the sync front open the breaker for the async front too.
        dead = redis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))
        try:
            for _ in range(settings.cache_breaker_failures):
                assert sync.run(dead.ping) is UNAVAILABLE
        finally:
            dead.close()
        assert services.core.breaker.state is BreakerState.OPEN
        skipped = services.core.metrics.breaker_skips
        assert await aio.get(key, DataType.MEMBER) is MISS  # in Redis, but not asked
        assert services.core.metrics.breaker_skips == skipped + 1
    finally:
        await services.aclose()


@pytest.mark.anyio
async def test_a_failure_through_the_async_front_stops_the_sync_front(settings: Settings) -> None:
    services = Services.open(settings, asyncio=True)
    try:
        key = services.keys.member(8)
        assert services.cache.set(key, {"id": 8}, DataType.MEMBER)
        dead = aioredis.Redis(host="127.0.0.1", port=free_port(), retry=AsyncRetry(NoBackoff(), 0))
        try:
            for _ in range(settings.cache_breaker_failures):
                assert await services.async_cache.run(dead.ping) is UNAVAILABLE
        finally:
            await dead.aclose()
        assert services.cache.get(key, DataType.MEMBER) is MISS
        # An invalidation that cannot reach Redis waits in the one outbox.
        services.cache.delete(key)
        assert key in set(services.core.outbox.drain())
    finally:
        await services.aclose()


def test_fronts_over_two_cores_are_refused(settings: Settings) -> None:
    one = build_cache(settings)
    other = build_async_cache(settings, core=CacheCore.from_settings(settings))
    try:
        with pytest.raises(ValueError, match="one core"):
            Services(settings, one.core, one, other)
    finally:
        one.close()


@pytest.mark.anyio
async def test_a_front_built_over_a_core_and_clients_shares_them(settings: Settings) -> None:
    first = build_cache(settings)
    second = build_cache(settings, core=first.core, clients=first.clients)
    try:
        assert second.core is first.core and second.clients is first.clients
    finally:
        first.close()


def test_the_engine_is_built_once_on_first_use(settings: Settings) -> None:
    url = "sqlite://"
    with Services.open(settings, database_url=url) as services:
        assert services._engine is None  # nothing built before it is asked for
        engine = services.engine
        assert services.engine is engine
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    assert services.closed


def test_close_in_a_forked_child_leaves_the_parents_sockets(settings: Settings) -> None:
    with Services.open(settings) as services:
        assert services.cache.ping()  # a pooled connection the child inherits
        pid = os.fork()
        if pid == 0:  # the child: drop the parent's services, never close them
            code = 0
            try:
                services.close()
                code = 0 if services.closed and not services.owned_here() else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert services.owned_here()
        assert services.cache.ping()  # the parent's connection still works
        assert services.redis("cache").ping()


@pytest.mark.anyio
async def test_bind_puts_the_applications_regions_on_the_process_fronts(
    settings: Settings,
) -> None:
    """The decorator's region runs on the process's fronts: one core, one set of counters."""
    region = CacheRegion()
    calls: list[str] = []

    @region.cached("lookup")
    def lookup(name: str) -> list[str]:
        calls.append(name)
        return [name]

    @region.cached("lookup")
    async def lookup_async(name: str) -> list[str]:
        calls.append(name)
        return [name]

    services = Services.open(settings, asyncio=True)
    try:
        services.bind(region)
        assert lookup("bind-test") == lookup("bind-test") == ["bind-test"]
        assert await lookup_async("bind-test") == ["bind-test"]  # the sync call's entry
        assert calls == ["bind-test"]
        assert services.core.metrics.of(DataType.LOOKUP).hits == 2
        await services.async_cache.delete(services.keys.lookup("bind-test"))
    finally:
        region.unbind()
        await services.aclose()


@pytest.mark.anyio
async def test_a_configured_durable_role_gets_clients_of_its_own(settings: Settings) -> None:
    with start_redis(maxmemory_policy="noeviction", appendonly=True) as durable:
        both = settings.model_copy(
            update={"durable_redis": RedisRole(host=durable.host, port=durable.port, db=3)}
        )
        services = Services.open(both, asyncio=True)
        try:
            assert services.redis("cache") is services.cache.clients.writer
            assert services.redis("durable") is not services.cache.clients.writer
            assert services.async_redis("durable") is not services.async_cache.clients.writer
            # The write-behind buffer and its recorder write to the durable server only.
            assert services.writebehind.client is services.redis("durable")
            event = ActivityEvent(member_id=5, kind="login", at=dt.datetime.now(dt.UTC))
            assert services.writebehind.record([event])
            assert services.recorder is not None
            await services.recorder.record([event])
            on_durable = durable.client(db=3)
            try:
                assert on_durable.xlen(services.writebehind.stream) == 2
            finally:
                on_durable.close()
            assert not services.redis("cache").exists(services.writebehind.stream)
            # The cache's entries go to the cache role.
            assert services.cache.set(services.keys.member(5), {"id": 5}, DataType.MEMBER)
            assert services.redis("cache").exists(services.keys.member(5))
            assert not services.redis("durable").exists(services.keys.member(5))
        finally:
            await services.aclose()
        # Both roles' pools are closed: no connection left on the durable server.
        probe = durable.client()
        try:
            names = [c.get("name") for c in probe.client_list()]
            assert "membership-cache" not in names
        finally:
            probe.close()
