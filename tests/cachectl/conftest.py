"""A running management API for the cachectl commands that talk to it.

The app is the management tests' (tests/management/conftest.py: shared Redis database 13 under
the test's own prefix, a throwaway PostgreSQL database, a session broker, random tokens),
served by uvicorn on a free loopback port in a thread of this process.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from fastapi import FastAPI

from config import Settings
from tests.management.conftest import (
    TEST_CONFIG,
    Tokens,
    broker,
    database_url,
    management_app,
    mgmt_settings,
    tokens,
)
from tests.support import postgres

__all__ = ["RunningApi", "broker", "database_url", "empty_database", "mgmt_settings", "tokens"]


@dataclass(frozen=True)
class RunningApi:
    url: str
    app: FastAPI
    tokens: Tokens

    def env(self, role: str = "admin") -> dict[str, str]:
        return {"CACHECTL_TOKEN": self.tokens.clear[role]}


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A throwaway PostgreSQL database, empty: `cachectl up` migrates and seeds it."""
    name = postgres.create_database("up")
    try:
        yield postgres.database_url(name)
    finally:
        postgres.drop_database(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def running_api(mgmt_settings: Settings, tokens: Tokens) -> Iterator[RunningApi]:
    app = management_app(mgmt_settings, TEST_CONFIG, tokens.configured)
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="cachectl-test-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    try:
        yield RunningApi(f"http://127.0.0.1:{port}", app, tokens)
    finally:
        server.should_exit = True
        thread.join(30)
