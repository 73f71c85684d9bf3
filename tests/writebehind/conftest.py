"""Fixtures: the write-behind buffer on the shared Redis (database 13, a prefix of the test's
own) and a throwaway PostgreSQL database, migrated, with members 1..MEMBERS.

Nothing outside the prefix or the throwaway database is touched; both are removed afterwards
(SCAN + UNLINK, DROP DATABASE), even when the tests fail.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from cache import CacheService
from cache.writebehind import WriteBehind, WriteBehindConfig
from db.engine import make_engine
from db.migrate import upgrade
from db.seed import seed
from tests.support.postgres import throwaway_database

MEMBERS = 200
SEED_NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)


def prepare(url: str, members: int = MEMBERS) -> None:
    """Migrate and load ``members`` members (ids 1..members)."""
    upgrade(url)
    engine = make_engine(url)
    try:
        seed(engine, members, progress=False, now=SEED_NOW)
    finally:
        engine.dispose()


def reset_activity(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE member_activity_daily, writebehind_offsets"))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with throwaway_database("wb", members=MEMBERS, now=SEED_NOW) as url:
        yield url


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(pg_engine: Engine) -> Engine:
    """The throwaway database with no activity, offsets or sightings yet."""
    reset_activity(pg_engine)
    return pg_engine


@pytest.fixture
def wb_config() -> WriteBehindConfig:
    return WriteBehindConfig(batch_size=500, linger_ms=5, block_ms=20, claim_idle_ms=60_000)


@pytest.fixture
def wb(cache: CacheService, wb_config: WriteBehindConfig) -> WriteBehind:
    buffer = WriteBehind(cache.clients.writer, cache.keys, wb_config)
    buffer.ensure_group()
    return buffer
