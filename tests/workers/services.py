"""Throwaway services for the Celery tests: a private redis-server and a PostgreSQL database.

A stack of worker processes gets a redis-server of its own (broker, results and cache on
databases 1, 2 and 0): its queues cannot meet another session's, BGSAVE and CONFIG are the
test's to use, and it is killed afterwards instead of cleaned key by key. Its data lives in a
PostgreSQL database created for it and dropped afterwards.
"""

from __future__ import annotations

import datetime as dt

from tests.support.postgres import drop_database as drop_database  # drops what create_database made
from tests.support.postgres import prepared_database

SEED_NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)

CACHE_DB, BROKER_DB, RESULTS_DB = 0, 1, 2


def create_database(members: int) -> tuple[str, str]:
    """A migrated, seeded PostgreSQL database: (name, SQLAlchemy URL)."""
    return prepared_database("celery", members=members, now=SEED_NOW)


def stack_env(prefix: str, port: int, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of worker, beat and Flower processes on a private redis-server."""
    return {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(port),
        "REDIS_DB": str(CACHE_DB),
        "REDIS_KEY_PREFIX": prefix,
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/{BROKER_DB}",
        "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{port}/{RESULTS_DB}",
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "test",
        # Worker-side reads of a busy test machine must not trip the cache's 0.25 s default.
        "REDIS_SOCKET_TIMEOUT": "5",
        # No warm-up or refresh nobody asked for: tests count keys and queries. The tests of
        # the automatic warm-up (tests/tasks/test_autowarm.py) turn it on.
        "CACHE_AUTOWARM": "false",
        "CACHE_REFRESH_AHEAD": "false",
        **extra,
    }
