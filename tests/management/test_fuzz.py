"""Fuzzing every management endpoint from its OpenAPI schema (schemathesis): no 5xx.

Each operation gets generated paths, queries and bodies (valid and invalid), sent with the
admin token so every code path behind the guard is reached. 503 is the one 5xx with a meaning
here: the health answer when checks fail (no worker runs in these tests); any 500 fails.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.python import asgi

from api_stub.management import PREFIX
from tests.conftest import TEST_REDIS_DB
from tests.management.conftest import TEST_CONFIG, Tokens, management_app, settings_for
from tests.support.redis_procs import RedisProcess

pytestmark = pytest.mark.slow
EXAMPLES = 25
OPERATIONS = [
    "GET /health",
    "GET /metrics",
    "GET /metrics/history",
    "GET /kinds",
    "GET /prometheus",
    "GET /reports",
    "GET /dead-letters",
    "GET /warmup/current",
    "GET /warmup/{task_id}",
    "POST /warmup",
    "POST /invalidation/trigger",
    "POST /dead-letters/replay",
    "DELETE /clear",
    "GET /audit",
]


@pytest.fixture(scope="module")
def fuzzed_app(database_url: str, broker: RedisProcess, tokens: Tokens) -> Iterator[FastAPI]:
    prefix = f"tfuzz{secrets.token_hex(5)}:"
    settings = settings_for(prefix, database_url, broker.port)
    app = management_app(settings, TEST_CONFIG, tokens.configured)
    try:
        yield app
    finally:
        asgi.shutdown_lifespans()  # the app's lifespan ran in schemathesis's event loop
        client = redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)
        try:
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                client.unlink(key)
        finally:
            client.close()


@pytest.fixture(scope="module")
def management_schema(fuzzed_app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app).include(
        path_regex=f"^{PREFIX}/"
    )


def operations(schema: Any) -> dict[str, Any]:
    found = (result.ok() for result in schema.get_all_operations())
    return {f"{op.method.upper()} {op.path.removeprefix(PREFIX)}": op for op in found}


def test_the_schema_lists_every_management_operation(management_schema: Any) -> None:
    assert sorted(operations(management_schema)) == sorted(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_no_server_error(
    management_schema: Any, tokens: Tokens, operation: str, mode: GenerationMode
) -> None:
    strategy = operations(management_schema)[operation].as_strategy(mode)
    allowed_5xx = {503} if operation == "GET /health" else set()

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(headers=tokens.headers("admin"))
        code = response.status_code
        assert code < 500 or code in allowed_5xx, (
            case.method, case.formatted_path, case.query, case.body, code, response.text[:500]
        )  # fmt: skip

    fuzz()
