"""A live API with the dashboard installed, over real HTTP, on seeded data.

- The database is a throwaway PostgreSQL database, migrated and seeded with members
  (tests/workers/services.py), plus the metrics snapshots and maintenance reports of
  tests/dashboard/seed.py; dropped at the end.
- The cache is the shared Redis (127.0.0.1:6379, database 13) under a prefix of this session,
  whose keys are removed afterwards (SCAN + UNLINK).
- The Celery broker and results are a redis-server started for the session, so the warm-ups
  the tests start reach only the worker started here (tests/workers/processes.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from api_stub import dashboard
from config import Settings
from tests.conftest import TEST_REDIS_DB
from tests.dashboard import seed
from tests.dashboard.live import LiveServer
from tests.management.conftest import ROLES, TEST_CONFIG, Tokens, management_app, settings_for
from tests.support.redis_procs import RedisProcess, start_redis
from tests.workers import services
from tests.workers.harness import unlink_matching
from tests.workers.processes import WorkerProcess
from workers.client import TaskClient

MEMBERS = 30
# A live worker answers `inspect ping` in milliseconds, but a busy test machine needs slack.
CONFIG = dataclasses.replace(TEST_CONFIG, ping_timeout_s=1.5, check_timeout_s=4.0)


@dataclass(frozen=True)
class Live:
    url: str
    settings: Settings
    tokens: Tokens
    seeded: seed.Seeded


@pytest.fixture(scope="session")
def dashboard_tokens() -> Tokens:
    return Tokens({role: secrets.token_urlsafe(32) for role in ROLES})


@pytest.fixture(scope="session")
def dashboard_database() -> Iterator[str]:
    name, url = services.create_database(MEMBERS)
    try:
        yield url
    finally:
        services.drop_database(name)


@pytest.fixture(scope="session")
def dashboard_broker() -> Iterator[RedisProcess]:
    with start_redis() as proc:
        yield proc


@pytest.fixture(scope="session")
def dashboard_prefix() -> Iterator[str]:
    prefix = f"tdash{secrets.token_hex(5)}:"
    yield prefix
    client = redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)
    try:
        unlink_matching(client, [prefix + "*"])
    finally:
        client.close()


@pytest.fixture(scope="session")
def live(
    dashboard_database: str,
    dashboard_broker: RedisProcess,
    dashboard_prefix: str,
    dashboard_tokens: Tokens,
) -> Iterator[Live]:
    seeded = seed.store(dashboard_database, dt.datetime.now(dt.UTC))
    settings = settings_for(dashboard_prefix, dashboard_database, dashboard_broker.port)
    app = management_app(settings, CONFIG, dashboard_tokens.configured)
    dashboard.install(app, settings)
    with LiveServer(app) as server:
        yield Live(server.url, settings, dashboard_tokens, seeded)


@pytest.fixture(scope="session")
def worker(live: Live, dashboard_broker: RedisProcess) -> Iterator[WorkerProcess]:
    """A `celery worker` on the same broker, database and cache prefix as the live API."""
    env = services.stack_env(
        live.settings.redis_key_prefix, dashboard_broker.port, live.settings.database_url
    )
    env |= {"REDIS_PORT": "6379", "REDIS_DB": str(TEST_REDIS_DB)}
    with tempfile.TemporaryDirectory(prefix="test-dashboard-") as directory:
        process = WorkerProcess(env, Path(directory)).start()
        try:
            client = TaskClient(live.settings)
            try:
                process.wait_ready(client)
            finally:
                client.close()
            yield process
        finally:
            process.stop()
