"""Fixtures over the shared real-worker stack (tests/workers/harness.py).

Imported by the conftest of tests/workers and of tests/tasks; both get the one stack.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine

from cache import CacheService, build_cache
from config import Settings
from db import make_engine
from tests.workers import harness, services


@pytest.fixture(scope="session")
def stack() -> Iterator[harness.Stack]:
    """A running worker consuming all five queues, with its client, cache and Redis handles."""
    shared = harness.acquire()
    try:
        yield shared
    finally:
        harness.release()


@pytest.fixture
def clean_stack(stack: harness.Stack) -> Iterator[harness.Stack]:
    """The stack with no cache keys under its prefix, before and after the test."""
    stack.clear_cache()
    yield stack
    stack.clear_cache()


@pytest.fixture
def unit_settings() -> Settings:
    """Settings on the cache database of these tests, with a prefix of the test's own."""
    prefix = f"test-celery-{uuid.uuid4().hex[:8]}:"
    return harness.settings_from_env(harness.settings_env(prefix, "sqlite://"))


@pytest.fixture
def unit_cache(unit_settings: Settings) -> Iterator[CacheService]:
    """A CacheService on the real Redis (no worker); its keys are removed afterwards."""
    service = build_cache(unit_settings)
    assert service.ping(), "the shared Redis on 127.0.0.1:6379 must be running"
    yield service
    service.close()
    client = redis.Redis(host=harness.HOST, port=harness.PORT, db=harness.CACHE_DB)
    try:
        harness.unlink_matching(client, [unit_settings.redis_key_prefix + "*"])
    finally:
        client.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A migrated PostgreSQL database seeded with 200 members, for tests without a worker;
    dropped afterwards. Tests that write to it use their own rows."""
    name, url = services.create_database(200)
    try:
        yield url
    finally:
        services.drop_database(name)


@pytest.fixture(scope="session")
def pg_engine(pg_database: str) -> Iterator[Engine]:
    engine = make_engine(pg_database)
    yield engine
    engine.dispose()
