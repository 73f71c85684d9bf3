"""The pipelined async read path (cache/aiodirect.py) against real redis-servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cache import MISS, AsyncCacheService, DataType, build_async_cache
from cache.aiodirect import DirectAsyncReader
from config import load_settings
from tests.support.redis_procs import start_redis

pytestmark = pytest.mark.anyio


def _direct(cache: AsyncCacheService) -> DirectAsyncReader:
    assert cache._direct is not None, "standalone TCP reads take the direct path"
    return cache._direct


async def test_concurrent_reads_share_one_connection_and_get_their_own_replies(
    acache: AsyncCacheService,
) -> None:
    keys = acache.keys.members(range(200))
    assert await acache.set_many({key: {"n": n} for n, key in enumerate(keys)}, DataType.MEMBER)
    values = await asyncio.gather(*(acache.get(key, DataType.MEMBER) for key in keys))
    assert values == [{"n": n} for n in range(200)]
    assert await acache.get_many(keys[:3], DataType.MEMBER) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert len(_direct(acache)._pipes) == 1
    assert await acache.get(acache.keys.member("absent"), DataType.MEMBER) is MISS


async def test_a_cancelled_read_does_not_shift_the_replies(acache: AsyncCacheService) -> None:
    first, second = acache.keys.members([1, 2])
    await acache.set(first, "one")
    await acache.set(second, "two")
    reader = _direct(acache)
    await reader.get(first)  # connected
    cancelled = asyncio.ensure_future(reader.get(first))
    await asyncio.sleep(0)
    cancelled.cancel()
    assert (await acache.get(second), await acache.get(first)) == ("two", "one")


async def test_a_server_gone_silent_times_out_and_opens_the_breaker() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"SETNAME\r\n")
        await reader.readline(), await reader.readline()  # the name
        writer.write(b"+OK\r\n")  # the handshake's only command, then nothing more
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = load_settings(
        redis_host="127.0.0.1",
        redis_port=port,
        redis_db=0,
        redis_socket_timeout=0.2,
        cache_breaker_failures=1,
        _env_file=None,
    )
    cache = build_async_cache(settings)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(RedisTimeoutError):
            await asyncio.gather(_direct(cache).get("k"), _direct(cache).get("k2"))
        assert 0.2 <= asyncio.get_running_loop().time() - started < 1.0
        assert await cache.get("k") is MISS  # fail-open
        assert cache.breaker.state.value == "open"
    finally:
        await cache.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
async def private_redis() -> AsyncIterator[tuple[AsyncCacheService, int, str]]:
    password = "s3cret"
    with start_redis(requirepass=password) as proc:
        settings = load_settings(
            redis_host="127.0.0.1",
            redis_port=proc.port,
            redis_db=3,
            redis_password=password,
            cache_breaker_reset_seconds=0.1,
            _env_file=None,
        )
        cache = build_async_cache(settings)
        try:
            yield cache, proc.port, password
        finally:
            await cache.close()


async def test_the_handshake_authenticates_and_selects_the_database(
    private_redis: tuple[AsyncCacheService, int, str],
) -> None:
    cache, port, password = private_redis
    raw = redis.Redis(host="127.0.0.1", port=port, db=3, password=password)
    raw.set("k", b"in db 3")
    try:
        assert await _direct(cache).get("k") == b"in db 3"
        names = [client["name"] for client in raw.client_list()]
        assert "membership-cache" in names
    finally:
        raw.close()


@pytest.mark.fault
async def test_a_restarted_server_is_reconnected_to_without_an_error() -> None:
    with start_redis() as proc:
        settings = load_settings(
            redis_host="127.0.0.1", redis_port=proc.port, redis_db=0, _env_file=None
        )
        cache = build_async_cache(settings)
        try:
            await cache.set("k", "before")
            assert await _direct(cache).get("k") is not None
            proc.restart()  # the old connection is dead; nothing was kept on disk
            assert await _direct(cache).get("k") is None  # retried once on a fresh one
            proc.kill()
            with pytest.raises(RedisConnectionError):
                await _direct(cache).get("k")
        finally:
            await cache.close()
