"""Fixtures: a throwaway PostgreSQL database per test session, migrated and seeded once.

Each test gets a session inside a transaction that is rolled back afterwards, so tests can
write freely without seeing each other's rows. Nothing outside the throwaway database is
touched; it is dropped even when the tests fail.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from db.engine import make_engine
from db.seed import SeedReport, seed
from tests.support.postgres import throwaway_database

SEED_MEMBERS = 2_000
SEED_NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with throwaway_database("test") as url:
        yield url


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def seeded(pg_engine: Engine) -> SeedReport:
    return seed(pg_engine, SEED_MEMBERS, progress=False, now=SEED_NOW)


@pytest.fixture
def session(pg_engine: Engine, seeded: SeedReport) -> Iterator[Session]:
    """A session whose every write, commits included, is rolled back after the test."""
    with pg_engine.connect() as connection:
        outer = connection.begin()
        db_session = Session(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield db_session
        finally:
            db_session.close()
            outer.rollback()
