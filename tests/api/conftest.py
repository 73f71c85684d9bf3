"""Fixtures: a throwaway PostgreSQL database per test session, and apps over it.

The database (``mc_api_<random>``) is created, migrated and seeded once, and dropped even when
tests fail. Tests share it, so they check what their own writes did, never absolute counts.
Every app gets the test's own Redis key prefix (tests/conftest.py ``prefix``: the keys are
removed afterwards) in database 13 of the shared Redis. A missing service fails the run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import httpx
import pytest
import redis
from fastapi import FastAPI
from sqlalchemy import Engine, event

from api_stub import create_app
from cache import AsyncCacheService
from config import Settings, load_settings
from db.engine import make_engine
from tests.conftest import TEST_REDIS_DB
from tests.support.postgres import throwaway_database

ADMIN_DSN = "postgresql://root@127.0.0.1:5432/postgres"
SEED_MEMBERS = 300


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with throwaway_database("api", members=SEED_MEMBERS) as url:
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    """For checking the database directly, beside the app."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


# A reader asking for the current value: never served a value lagging a change (a kind's
# lag, api_stub.lagging).
CURRENT: Final = {"cache-control": "no-cache"}


def api_settings_for(prefix: str, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_host": "127.0.0.1",
        "redis_port": 6379,
        "redis_db": TEST_REDIS_DB,
        "redis_key_prefix": prefix,
        "database_url": database_url,
        "cache_xfetch_beta": 0.0,  # no early refresh: HIT and MISS are deterministic
        "cache_ttl_jitter": 0.0,
        # No write sampled by the consistency monitor: round-trip counts stay exact (its own
        # tests turn it on).
        "consistency_sample_rate": 0.0,
    }
    return load_settings(**(values | overrides), _env_file=None)


@pytest.fixture
def api_settings(prefix: str, database_url: str) -> Settings:
    return api_settings_for(prefix, database_url)


@dataclass
class Api:
    """One running app (its lifespan entered) and a client for it."""

    app: FastAPI
    client: httpx.AsyncClient
    statements: list[str]  # SQL the app ran, to tell a hit (none) from a miss

    @property
    def cache(self) -> AsyncCacheService:
        cache = self.app.state.running.cache
        assert cache is not None
        return cache


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Api]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        statements: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        db_engine = app.state.running.db.engine
        event.listen(db_engine, "before_cursor_execute", record)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(app, client, statements)


@pytest.fixture
async def api(api_settings: Settings) -> AsyncIterator[Api]:
    async with serve(api_settings) as running:
        yield running


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)
    yield client
    client.close()
