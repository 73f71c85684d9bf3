"""Shared fixtures: real Redis on 127.0.0.1:6379, own database number, own key prefixes.

Every test gets a prefix of its own and the keys under it are removed afterwards (SCAN +
UNLINK, never FLUSHALL). A missing Redis fails the run: these tests never skip it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from bench._common import clear_prefix
from cache import AsyncCacheService, CacheService, build_async_cache, build_cache
from config import Settings, load_settings

TEST_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "13"))


def _clear_prefix(prefix: str) -> None:
    # Lease keys live under <prefix>lease:{<key>}, also under the prefix.
    client = redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)
    try:
        clear_prefix(prefix, client)
    finally:
        client.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    value = f"t{uuid.uuid4().hex[:10]}:"
    yield value
    _clear_prefix(value)


@pytest.fixture
def settings(prefix: str) -> Settings:
    return load_settings(
        redis_host="127.0.0.1",
        redis_port=6379,
        redis_db=TEST_REDIS_DB,
        redis_key_prefix=prefix,
        _env_file=None,
    )


@pytest.fixture
def cache(settings: Settings) -> Iterator[CacheService]:
    service = build_cache(settings)
    assert service.ping(), "the shared Redis on 127.0.0.1:6379 must be running"
    yield service
    service.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def acache(settings: Settings) -> AsyncIterator[AsyncCacheService]:
    service = build_async_cache(settings)
    yield service
    await service.close()
