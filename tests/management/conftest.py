"""Fixtures: apps with the management API installed, real Redis, real PostgreSQL.

- The cache is the shared Redis (127.0.0.1:6379, database 13) under the test's own prefix
  (tests/conftest.py removes its keys afterwards).
- The Celery broker and results are a redis-server started for the session: the warm-ups and
  invalidations the tests enqueue never reach a queue another session's workers consume.
- The database is a throwaway PostgreSQL database, migrated to head (the audit table) and
  seeded, dropped at the end even when tests fail.
- Tokens are random per session; only their digests are configured, as in production.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from api_stub import create_app
from api_stub.management import ManagementConfig, ManagementRuntime, Role, hash_token
from config import Settings, load_settings
from tests.conftest import TEST_REDIS_DB
from tests.support.postgres import throwaway_database
from tests.support.redis_procs import RedisProcess, start_redis

# The worker-process stack, for the tests that need a real worker (one definition of it).
from tests.workers.conftest import clean_stack, stack  # noqa: F401

ADMIN_DSN = "postgresql://root@127.0.0.1:5432/postgres"
REPO = Path(__file__).resolve().parents[2]
SEED_MEMBERS = 50
ROLES = ("viewer", "operator", "admin")
# Tests do not meet the limit unless they mean to; test_ratelimit sets its own.
TEST_CONFIG = ManagementConfig(rate_limit=100_000, ping_timeout_s=0.2, check_timeout_s=2.0)


@dataclass(frozen=True)
class Tokens:
    clear: dict[str, str]  # role -> token

    @property
    def configured(self) -> str:
        return ",".join(f"{role}:{hash_token(t)}:{role}-test" for role, t in self.clear.items())

    def headers(self, role: str | None) -> dict[str, str]:
        if role is None:
            return {}
        if role == "wrong":
            return {"Authorization": f"Bearer {secrets.token_urlsafe(32)}"}
        return {"Authorization": f"Bearer {self.clear[role]}"}


@pytest.fixture(scope="session")
def tokens() -> Tokens:
    return Tokens({role: secrets.token_urlsafe(32) for role in ROLES})


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with throwaway_database("mgmt", members=SEED_MEMBERS) as url:
        yield url


@pytest.fixture(scope="session")
def broker() -> Iterator[RedisProcess]:
    with start_redis() as proc:
        yield proc


def settings_for(prefix: str, database_url: str, broker_port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_host": "127.0.0.1",
        "redis_port": 6379,
        "redis_db": TEST_REDIS_DB,
        "redis_key_prefix": prefix,
        "database_url": database_url,
        "celery_broker_url": f"redis://127.0.0.1:{broker_port}/1",
        "celery_result_backend": f"redis://127.0.0.1:{broker_port}/2",
        "environment": "test",
    }
    return load_settings(**(values | overrides), _env_file=None)


@pytest.fixture
def mgmt_settings(prefix: str, database_url: str, broker: RedisProcess) -> Settings:
    return settings_for(prefix, database_url, broker.port)


@dataclass
class Mgmt:
    """A started app with the management API and a client for it."""

    app: FastAPI
    client: httpx.AsyncClient
    tokens: Tokens
    calls: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> ManagementRuntime:
        runtime = self.app.state.management.runtime
        assert runtime is not None
        return runtime

    async def call(
        self, method: str, path: str, role: str | None = "admin", **kwargs: Any
    ) -> httpx.Response:
        headers = {**self.tokens.headers(role), **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)


def management_app(settings: Settings, config: ManagementConfig, tokens: str) -> FastAPI:
    """The API as production builds it, with the management settings of ``config``."""
    update: dict[str, Any] = {
        f"management_{item.name}": getattr(config, item.name)
        for item in fields(config)
        if item.name != "tokens"
    }
    update["management_tokens"] = SecretStr(tokens)
    return create_app(settings.model_copy(update=update))


@asynccontextmanager
async def serve(
    settings: Settings,
    tokens: Tokens,
    config: ManagementConfig = TEST_CONFIG,
) -> AsyncIterator[Mgmt]:
    app = management_app(settings, config, tokens.configured)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Mgmt(app, client, tokens)


@pytest.fixture
async def mgmt(mgmt_settings: Settings, tokens: Tokens) -> AsyncIterator[Mgmt]:
    async with serve(mgmt_settings, tokens) as running:
        yield running


__all__ = ["REPO", "ROLES", "TEST_CONFIG", "Mgmt", "Role", "Tokens", "serve", "settings_for"]
