"""A client's bad request is not a cache error: requests for unknown lookup names or invalid
queries (a scraper, a fuzzer) are counted as declined, and /health stays healthy."""

from __future__ import annotations

import pytest

from api_stub.problems import DATABASE_UNAVAILABLE, PROBLEM_JSON
from cache import DataType
from tests.api.conftest import Api

pytestmark = pytest.mark.anyio


async def test_unknown_names_and_bad_queries_are_declined_not_errors(api: Api) -> None:
    for n in range(300):
        answer = await api.client.get(f"/api/v1/lookups/no-such-table-{n}")
        assert (answer.status_code, answer.headers["x-cache"]) == (404, "MISS")
    bad = await api.client.get("/api/v1/members", params={"page": 0})
    assert bad.status_code == 422
    lookups = api.cache.metrics.of(DataType.LOOKUP)
    members = api.cache.metrics.of(DataType.MEMBER)
    assert (lookups.declined, lookups.load_errors, lookups.misses) == (300, 0, 0)
    assert (members.declined, members.load_errors) == (1, 0)
    totals = api.cache.metrics.snapshot()["total"]
    assert totals["load_errors"] == 0 and totals["declined"] == 301


async def test_a_failing_route_is_still_a_load_error(api: Api) -> None:
    """A 5xx is the platform's failure: counted as a load error (the database down: 503)."""
    api.app.state.running.db.engine.dispose()
    broken = api.app.state.running.db
    original = broken.read

    async def down(_work: object) -> object:
        from db.errors import DatabaseUnavailable

        raise DatabaseUnavailable("database down for the test")

    broken.read = down  # type: ignore[method-assign]
    try:
        answer = await api.client.get("/api/v1/analytics/growth")
    finally:
        broken.read = original  # type: ignore[method-assign]
    assert answer.status_code == 503
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert answer.json()["type"] == DATABASE_UNAVAILABLE.type
    assert api.cache.metrics.of(DataType.ANALYTICS).load_errors == 1
