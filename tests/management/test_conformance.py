"""The API answers what its OpenAPI document says: schemathesis with all its checks finds nothing.

Every check schemathesis has (no server error, status codes, content types, response headers
and schemas, negative data rejected, positive data accepted, missing headers, unsupported
methods and Allow, ignored auth, use after free, resource availability) over its phases
(coverage, fuzzing, and the stateful phase following the document's links: a created member
to its routes), against the real app: a PostgreSQL database of its own with a few members,
the shared Redis under the test's prefix, a broker of the session's own (no worker: warm-ups
wait queued). Once with an admin token, once with none (every management route must then
answer its documented 401). The rate limit is out of reach (TEST_CONFIG); few examples per
operation keep each run within seconds.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import schemathesis
from fastapi import FastAPI
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema
from schemathesis.engine.run import PhaseName
from schemathesis.python import asgi

from api_stub.management import PREFIX
from tests.conftest import TEST_REDIS_DB
from tests.management.conftest import TEST_CONFIG, Tokens, management_app, settings_for
from tests.support.postgres import throwaway_database
from tests.support.redis_procs import RedisProcess

pytestmark = pytest.mark.slow
EXAMPLES = 8
MEMBERS = 10
STATEFUL_STEPS = 30
FAILED = (Status.FAILURE, Status.ERROR)
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis's default
MANAGEMENT_OPERATIONS = [
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
    "GET /tokens",
    "POST /tokens",
    "DELETE /tokens/{label}",
]


@pytest.fixture(scope="module")
def conformance_database() -> Iterator[str]:
    """Its own: the generated writes (bulk deletes included) reach no other test's members."""
    with throwaway_database("conf", members=MEMBERS) as url:
        yield url


@pytest.fixture(scope="module")
def app(conformance_database: str, broker: RedisProcess, tokens: Tokens) -> Iterator[FastAPI]:
    prefix = f"tconf{secrets.token_hex(5)}:"
    settings = settings_for(prefix, conformance_database, broker.port)
    built = management_app(settings, TEST_CONFIG, tokens.configured)
    try:
        yield built
    finally:
        asgi.shutdown_lifespans()  # the app's lifespan ran in schemathesis's event loop
        client = redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)
        try:
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                client.unlink(key)
        finally:
            client.close()


@dataclass
class Run:
    failures: list[str] = field(default_factory=list)
    fuzzed: set[str] = field(default_factory=set)  # operations the fuzzing phase called
    stateful_calls: int = 0  # requests of the stateful phase (links followed)


def run(app: FastAPI, headers: dict[str, str], skip: str | None = None) -> Run:
    """Run schemathesis over the API's document (but the paths matching ``skip``)."""
    skipped = [] if skip is None else [{"include-path-regex": skip, "enabled": False}]
    config = SchemathesisConfig.from_dict(
        {
            "seed": 20261206,
            "headers": headers,
            "generation": {"max-examples": EXAMPLES, "database": "none"},
            "phases": {"stateful": {"max-steps": STATEFUL_STEPS}},
            "checks": {
                # A value of the right form may still be refused for its meaning, which no
                # schema states: an unknown country code, a birth date in the future, ids
                # with a warm-up that takes none. Those are 422s naming the field.
                "positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]},
            },
            "operations": [
                {
                    # A failing health check answers 503 with the report: no worker runs here.
                    "include-path": f"{PREFIX}/health",
                    "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "4xx", "503"]}},
                },
                *skipped,
            ],
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    result = Run()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            if event.status in FAILED:
                result.failures.extend(_failures(event))
            elif event.phase is PhaseName.STATEFUL_TESTING:
                result.stateful_calls += len(event.recorder.cases)
            elif event.phase is PhaseName.FUZZING and event.recorder.cases and event.label:
                result.fuzzed.add(event.label)
        elif isinstance(event, events.NonFatalError | events.FatalError):
            result.failures.append(f"error: {event}")
    return result


def _failures(event: events.ScenarioFinished) -> list[str]:
    lines: list[str] = []
    recorder = event.recorder
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.status == Status.SUCCESS or check.failure_info is None:
                continue
            case = recorder.cases[case_id].value
            response = recorder.find_response(case_id=case_id)
            answer: Any = None if response is None else (response.status_code, response.text[:300])
            failure = check.failure_info.failure
            sent = f"{case.method} {case.formatted_path} {case.query} {case.body!r:.200}"
            lines.append(
                f"{event.label} {check.name}: {failure.title} {failure.message[:300]!r}"
                f" | {sent} -> {answer}"
            )
    return lines or [f"{event.label}: {event.status}"]


def operations(app: FastAPI) -> set[str]:
    return {
        f"{method.upper()} {path}"
        for path, item in app.openapi()["paths"].items()
        for method in item
    }


def test_the_schema_lists_every_management_operation(app: FastAPI) -> None:
    management = {op.replace(PREFIX, "") for op in operations(app) if PREFIX in op}
    assert sorted(management) == sorted(MANAGEMENT_OPERATIONS)


def test_with_an_admin_token_schemathesis_finds_nothing(app: FastAPI, tokens: Tokens) -> None:
    found = run(app, tokens.headers("admin"))
    assert found.failures == [], "\n".join(found.failures)
    assert found.fuzzed == operations(app)
    assert found.stateful_calls > 0


def test_without_a_token_schemathesis_finds_nothing(app: FastAPI) -> None:
    """The routes behind a token (the management API, the dashboard's whoami) answer and
    document 401; the membership routes take none and were run above."""
    guarded = f"^({PREFIX}|/dashboard)/"
    found = run(app, {}, skip=f"^(?!{guarded[1:]})")
    assert found.failures == [], "\n".join(found.failures)
    assert found.fuzzed == {op for op in operations(app) if re.search(guarded, op.split()[1])}
    assert len(found.fuzzed) == len(MANAGEMENT_OPERATIONS) + 1
